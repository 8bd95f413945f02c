"""``dbopt tail TOPIC``: print the decoded records of a dbopt topic as JSON lines.

One record per line (schema field names; timestamps ISO-8601 UTC; bytes base64), flushed
line by line so it can feed a pipe. A record that does not decode is reported on stderr
with its partition, offset and reason, and makes the exit status 1; it is never skipped
silently.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from streams.config import Settings, load_settings
from streams.cli_args import positive_float, positive_int
from streams.kafka.consume import TopicNotFound, assigned_consumer, read_messages
from streams.serde import Codec, DecodeError

from .jsonview import to_json

HELP = "print the decoded records of a dbopt topic as JSON lines (timestamps as ISO-8601 UTC)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "topic",
        metavar="TOPIC",
        help="a topic name, or a short name: query-events, pool-snapshots, latency-windows, alerts, "
        "commands, results, dlq",
    )
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default: only new ones)")
    parser.add_argument("--max", type=positive_int, metavar="N", help="exit after N records")
    parser.add_argument(
        "--timeout", type=positive_float, default=None, metavar="S",
        help="exit after S seconds without a new record (default: never)",
    )


def resolve_topic(settings: Settings, name: str) -> str:
    """A short name (``query-events`` or ``query_events``) -> its configured topic; else ``name``."""
    return settings.topics.all().get(name.replace("-", "_"), name)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    topic = resolve_topic(settings, args.topic)
    codec = Codec.from_settings(settings)
    try:
        consumer = assigned_consumer(settings.kafka_bootstrap, topic, from_beginning=args.from_beginning)
    except TopicNotFound:
        short = ", ".join(k.replace("_", "-") for k in settings.topics.all())
        print(f"dbopt tail: topic {topic!r} does not exist on {settings.kafka_bootstrap} "
              f"(short names: {short})", file=sys.stderr)
        return 2
    bad = 0
    idle = float("inf") if args.timeout is None else args.timeout
    try:
        for msg in read_messages(consumer, max_messages=args.max, idle_timeout=idle):
            if msg.error() is not None:
                print(f"dbopt tail: {topic}: {msg.error().str()}", file=sys.stderr, flush=True)
                continue
            try:
                decoded = codec.decode(msg.value())
            except DecodeError as exc:
                bad += 1
                print(f"dbopt tail: {topic} partition {msg.partition()} offset {msg.offset()}: "
                      f"cannot decode ({exc.reason}): {exc.detail}", file=sys.stderr, flush=True)
                continue
            schema = codec.schemas.get(decoded.schema_name).raw
            print(json.dumps(to_json(schema, decoded.record), ensure_ascii=False), flush=True)
    except BrokenPipeError:  # e.g. `dbopt tail ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    return 1 if bad else 0
