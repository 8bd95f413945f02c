"""``dbopt tail TOPIC``: print the decoded records of a dbopt topic as JSON lines.

Like tail(1): the last records of each partition first (``--last``, default 10), then every new
one as it arrives, until ``--max`` records were printed, ``--timeout`` seconds pass without
one, or Ctrl-C. Once every partition has been read to its end it says so on stderr, so a quiet
topic never looks like a hung command.

One record per line (schema field names; timestamps ISO-8601 UTC; bytes base64), flushed
line by line so it can feed a pipe. A record that does not decode is reported on stderr
with its partition, offset and reason, and makes the exit status 1; it is never skipped
silently. A topic that does not exist is exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from confluent_kafka import KafkaError

from streams.cli_args import add_logging_arguments, non_negative_int, positive_float, positive_int
from streams.config import Settings, load_settings
from streams.kafka.consume import TopicNotFound, assigned_consumer, read_messages
from streams.serde import Codec, DecodeError

from .jsonview import to_json

HELP = "print the decoded records of a dbopt topic as JSON lines: the last ones, then new ones as they arrive"
DEFAULT_LAST = 10

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. Timestamps are ISO-8601 UTC, bytes base64. Exit status 1 when a record does not decode, "
        "2 when the topic does not exist."
    )
    parser.add_argument(
        "topic",
        metavar="TOPIC",
        help="a topic name, or a short name: query-events, pool-snapshots, latency-windows, alerts, "
        "commands, results, dlq",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--last", type=non_negative_int, default=DEFAULT_LAST, metavar="N",
                       help=f"start with the last N records of each partition (default {DEFAULT_LAST}; "
                       "0: only records that arrive from now on)")
    start.add_argument("--from-beginning", action="store_true", help="start with the oldest record of each partition")
    parser.add_argument("--max", type=positive_int, metavar="N", help="exit after N records")
    parser.add_argument(
        "--timeout", type=positive_float, default=None, metavar="S",
        help="exit after S seconds without a new record (default: never)",
    )
    add_logging_arguments(parser)


def resolve_topic(settings: Settings, name: str) -> str:
    """A short name (``query-events`` or ``query_events``) -> its configured topic; else ``name``."""
    return settings.topics.all().get(name.replace("-", "_"), name)


def waiting_line(topic: str, timeout: float | None) -> str:
    stop = "Ctrl-C to stop" if timeout is None else f"exits after {timeout:g} s without one, or Ctrl-C"
    return f"dbopt tail: waiting for new records on {topic} ({stop})"


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    topic = resolve_topic(settings, args.topic)
    codec = Codec.from_settings(settings)
    last = None if args.from_beginning else args.last
    try:
        # end-of-partition events tell when the records already there have all been shown
        consumer = assigned_consumer(settings, topic, last=last, enable_partition_eof=True)
    except TopicNotFound:
        short = ", ".join(k.replace("_", "-") for k in settings.topics.all())
        print(f"dbopt tail: topic {topic!r} does not exist on {settings.kafka_bootstrap} "
              f"(short names: {short})", file=sys.stderr)
        return 2
    partitions = {tp.partition for tp in consumer.assignment()}
    log.debug("tail %s: partitions %s from %s", topic, sorted(partitions),
              "the oldest record" if last is None else f"the last {last} record(s) of each")
    at_end: set[int | None] = set()
    said_waiting = False
    bad = 0
    idle = float("inf") if args.timeout is None else args.timeout
    try:
        for msg in read_messages(consumer, max_messages=args.max, idle_timeout=idle):
            error = msg.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                if at_end == partitions and not said_waiting:
                    print(waiting_line(topic, args.timeout), file=sys.stderr, flush=True)
                    said_waiting = True
                continue
            if error is not None:
                print(f"dbopt tail: {topic}: {error.str()}", file=sys.stderr, flush=True)
                continue
            try:
                record = codec.decode_record(msg.value())
            except DecodeError as exc:
                bad += 1
                print(f"dbopt tail: {topic} partition {msg.partition()} offset {msg.offset()}: "
                      f"cannot decode ({exc.reason}): {exc.detail}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(to_json(record), ensure_ascii=False), flush=True)
    except BrokenPipeError:  # e.g. `dbopt tail ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    return 1 if bad else 0
