"""How fast a Faust agent reads the bench topic when it does nothing with the events: the ceiling
any windows stage written as a Faust agent could reach (why ``dbopt worker``'s windows stage is a
confluent-kafka loop instead, ``docs/windows.md``).

    .venv/bin/python bench/faust_floor.py [--events 100000]

The agent takes ``stream.take_events(2000, 0.2)`` batches, as the Faust windows agent did, counts
them and stops at ``--events``; events/s from its first batch to its last. Compare with the raw
loop of ``bench/compare.py`` over the same topic.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from typing import Any

from common import bench_settings, fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    args, _ = parser.parse_known_args()
    topic = f"dbopt.bench.query-events.{args.events // 1000}k"
    settings = bench_settings()
    n = fill(settings, topic, args.events)

    import faust

    app = faust.App(f"bench-faust-floor-{uuid.uuid4().hex[:8]}", broker=f"kafka://{settings.kafka_bootstrap}",
                    store="memory://", web_enabled=False, autodiscover=False, consumer_auto_offset_reset="earliest",
                    datadir=tempfile.mkdtemp(prefix="dbopt-bench-faust-"))  # fmt: skip
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "t0": 0.0}

    @app.agent(source, concurrency=1)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(2000, 0.2):
            if not seen["n"]:
                seen["t0"] = time.perf_counter()
            seen["n"] += len(batch)
            if seen["n"] >= n:
                rate = seen["n"] / (time.perf_counter() - seen["t0"])
                print(f"Faust agent doing nothing: {rate:,.0f} events/s over {seen['n']:,} events", flush=True)
                os._exit(0)  # noqa: SLF001 - the measurement is done; Faust's shutdown adds nothing to it

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
