"""The dbopt windows job written in Quix Streams, the peer a platform team would pick instead.

Run by ``bench/compare.py`` with the interpreter of the benchmark-only virtualenv
(``make bench-peers``: ``.run/bench-peers``, from ``bench/requirements-peers.txt``); it is never a
dependency of dbopt. Written the way Quix's documentation shows it: QueryEvents in (Avro
single-object encoding, decoded with fastavro like dbopt's raw loop does), event time from the
record, ``group_by`` service|fingerprint (Quix repartitions through an internal topic), a tumbling
window of 60 s with 10 s grace, a custom 1 %-accurate log-bucket quantile sketch as the aggregation,
emit-final p50/p95/p99 with the count to an output topic.

    python bench/peers/quix_job.py --broker 127.0.0.1:19092 --topic T --group G --output O --state-dir D
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path
from typing import Any

import fastavro
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Aggregator
from quixstreams.models.serializers import Deserializer

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "QueryEvent.avsc"
LOG_GAMMA = math.log((1 + 0.01) / (1 - 0.01))


def _plain(schema: Any) -> Any:
    """The schema without logical types (timestamps stay int milliseconds, as dbopt reads them)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


PARSED = fastavro.parse_schema(_plain(json.loads(SCHEMA.read_text())))


class SingleObjectAvro(Deserializer):
    """Avro single-object encoding (C3 01 + 8-byte schema fingerprint + body) -> dict."""

    def __call__(self, value: bytes, ctx: Any) -> Any:
        return fastavro.schemaless_reader(io.BytesIO(value[10:]), PARSED, None)


class LogSketch(Aggregator):
    """Durations counted in logarithmic bins; p50/p95/p99 (lower order statistic) when the window closes."""

    def initialize(self) -> dict[str, Any]:
        return {"n": 0, "zeros": 0, "bins": {}}

    def agg(self, old: dict[str, Any], new: Any, timestamp: int) -> dict[str, Any]:
        duration = new[self.column] if self.column else new
        old["n"] += 1
        if duration > 0:
            key = str(math.ceil(math.log(duration) / LOG_GAMMA))
            old["bins"][key] = old["bins"].get(key, 0) + 1
        else:
            old["zeros"] += 1
        return old

    def result(self, value: dict[str, Any]) -> dict[str, Any]:
        n, zeros = value["n"], value["zeros"]
        bins = sorted((int(k), c) for k, c in value["bins"].items())
        out: dict[str, Any] = {"count": n}
        for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
            rank, seen, found = math.floor(q * (n - 1)), zeros, 0.0
            if rank >= zeros:
                for key, count in bins:
                    seen += count
                    if seen > rank:
                        found = math.exp(key * LOG_GAMMA) * 2 / (1 + math.exp(LOG_GAMMA))
                        break
            out[name] = found
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = Application(broker_address=args.broker, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, loglevel="WARNING")  # fmt: skip
    events = app.topic(args.topic, value_deserializer=SingleObjectAvro(), key_deserializer="str",
                       timestamp_extractor=lambda value, headers, timestamp, kind: value["event_time"])  # fmt: skip
    output = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(events)
    sdf = sdf.group_by(lambda event: f"{event['service']}|{event['fingerprint']}", name="service_fingerprint")
    sdf = sdf.tumbling_window(60_000, grace_ms=10_000).agg(latency=LogSketch("duration_ms")).final()
    sdf.to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
