"""``dbopt produce --jsonl FILE``: send QueryEvents given as JSON lines.

Each line is one QueryEvent with the schema's field names. ``event_time`` may be ISO-8601
(no offset means UTC) or epoch milliseconds, and defaults to now; other optional fields get
their defaults. ``query_text`` may be raw SQL: it goes through the SDK's normalizer
(:func:`streams.client.events.prepare_record`), so literals never reach Kafka, and
``fingerprint``/``statement_type``/``tables`` are derived from it.

A bad line is reported on stderr with its number and the reason; every good line is still
sent. The exit status is 1 when any line was bad or any record was not delivered.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import IO, Iterator, TypeGuard

from confluent_kafka import KafkaError, Message, Producer

from streams.cli_args import add_logging_arguments, positive_float
from streams.client.events import InvalidEvent, prepare_record
from streams.client.producer import default_instance_id
from streams.config import Settings, load_settings
from streams.kafka import clients
from streams.kafka.topics_cli import ready_to_produce
from streams.records import QueryEvent
from streams.serde import Codec, SchemaError
from streams.sql import StatementCache

from .jsonview import ms_from_iso

HELP = "send QueryEvents given as JSON lines (raw query_text is normalized; bad lines are reported by number)"

# latest instant the schema's timestamps can be shown as ISO-8601 (9999-12-31T23:59:59.999Z)
MAX_EPOCH_MS = 253_402_300_799_999
# below this an epoch value is almost surely seconds, not milliseconds (1973-03-03)
MIN_PLAUSIBLE_MS = 100_000_000_000


class BadLine(ValueError):
    """One input line that cannot become a QueryEvent; the message is the reason."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jsonl", required=True, metavar="FILE", help="JSON-lines file of QueryEvents, or - for stdin")
    parser.add_argument("--service", help="service for lines that do not name one")
    parser.add_argument("--instance-id", default=None, help="instance_id for lines without one (default: host-pid)")
    parser.add_argument("--database", help="database for lines without one")
    add_logging_arguments(parser)
    parser.add_argument("--timeout", type=positive_float, default=30.0,
                        help="seconds to wait for the broker: to check the topic, and for delivery at the end (default 30)")


# -- pure: one line -> one QueryEvent record ----------------------------------------------------


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def event_time_ms(value: object) -> int:
    """``event_time`` as epoch milliseconds from ISO-8601 text or a number of milliseconds."""
    if isinstance(value, str) and not value.strip().isdigit():
        try:
            ms = ms_from_iso(value.strip())
        except ValueError:
            raise BadLine(f"event_time {value!r} is neither ISO-8601 nor epoch milliseconds") from None
    elif isinstance(value, str) or (_is_number(value) and math.isfinite(value)):
        ms = int(value)
        if 0 <= ms < MIN_PLAUSIBLE_MS:
            raise BadLine(f"event_time {value!r} looks like epoch seconds; give epoch milliseconds or ISO-8601")
    else:
        raise BadLine(f"event_time must be ISO-8601 text or epoch milliseconds, got {json.dumps(value)}")
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise BadLine(f"event_time {value!r} is out of range (1970 .. 9999)")
    return ms


def parse_line(
    text: str, *, cache: StatementCache, codec: Codec, service: str | None, instance_id: str, database: str | None
) -> QueryEvent:
    """A complete, normalized QueryEvent from one JSON line; raises :class:`BadLine`."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(f"not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(raw, dict):
        raise BadLine(f"expected a JSON object, got {type(raw).__name__}")
    if not (raw.get("service") or service):
        raise BadLine("service is required (in the line, or with --service)")
    if "duration_ms" in raw and not (_is_number(raw["duration_ms"]) and math.isfinite(raw["duration_ms"])):
        raise BadLine(f"duration_ms must be a finite number of milliseconds, got {json.dumps(raw['duration_ms'])}")
    if "rows" in raw and not (isinstance(raw["rows"], int) and not isinstance(raw["rows"], bool)):
        raise BadLine(f"rows must be a whole number, got {json.dumps(raw['rows'])}")
    if raw.get("event_time") is not None:
        raw["event_time"] = event_time_ms(raw["event_time"])
    try:
        record = prepare_record(raw, cache=cache, service=service or "", instance_id=instance_id, database=database)
        codec.validate(record.SCHEMA, record.to_avro())
    except (InvalidEvent, SchemaError) as exc:
        raise BadLine(str(exc)) from None
    return record


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for every non-blank line; text is None when it is not UTF-8."""
    for number, data in enumerate(stream, start=1):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            yield number, None
            continue
        if text.strip():
            yield number, text


# -- I/O -----------------------------------------------------------------------------------------


@dataclass
class DeliveryCounts:
    """Delivery reports of one run, counted (notify's ledger row is ``streams.notify.ledger.Delivery``)."""

    delivered: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed[err.str()] = self.failed.get(err.str(), 0) + 1


def _producer(settings: Settings) -> Producer:
    return clients.producer(
        settings,
        **{"client.id": "dbopt-produce", "compression.type": settings.sdk_compression, "linger.ms": settings.sdk_linger_ms},
    )


def _send(producer: Producer, topic: str, key: bytes, value: bytes, delivery: DeliveryCounts) -> None:
    """Produce, waiting for room in the queue instead of dropping (a CLI may block)."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=delivery)
            break
        except BufferError:
            producer.poll(0.5)
    producer.poll(0)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        stream = sys.stdin.buffer if args.jsonl == "-" else open(args.jsonl, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"dbopt produce: cannot read {args.jsonl}: {exc.strerror}", file=sys.stderr)
        return 2
    if not ready_to_produce(settings, ["query_events"], "dbopt produce", timeout=args.timeout):
        stream.close()
        return 1
    topic = settings.topics.query_events
    codec = Codec.from_settings(settings)
    cache = StatementCache(settings.sdk_statement_cache)
    instance_id = args.instance_id or default_instance_id()
    producer = _producer(settings)
    delivery = DeliveryCounts()
    sent = bad = 0
    with stream:
        for number, text in numbered_lines(stream):
            try:
                if text is None:
                    raise BadLine("not UTF-8 text")
                record = parse_line(
                    text, cache=cache, codec=codec, service=args.service, instance_id=instance_id,
                    database=args.database,
                )
            except BadLine as exc:
                bad += 1
                print(f"line {number}: {exc}", file=sys.stderr, flush=True)
                continue
            _send(producer, topic, record.service.encode(), codec.encode_record(record, topic=topic), delivery)
            sent += 1
    pending = producer.flush(args.timeout)
    undelivered = sent - delivery.delivered
    for reason, count in delivery.failed.items():
        print(f"dbopt produce: {count} record(s) not delivered: {reason}", file=sys.stderr)
    if pending:
        print(f"dbopt produce: {pending} record(s) still unacknowledged after {args.timeout:g}s", file=sys.stderr)
    print(f"sent {delivery.delivered}, bad {bad}, not delivered {undelivered} (topic {topic})")
    return 1 if bad or undelivered else 0
