"""``dbopt command submit``: the operator's manual path to the executor.

The statement is not judged here — the executor is the gate and answers every command with an
OptimizationResult — it is only classified, signed with ``DBOPT_COMMAND_KEY`` and sent to the
commands topic. The command id is the last line of stdout, so scripts can wait for its result.
"""

from __future__ import annotations

import argparse

from confluent_kafka import KafkaError, Message

from streams.commands import build_command, command_key, sign
from streams.config import Settings, load_settings
from streams.kafka import clients
from streams.kafka.topics import ensure_for_producing
from streams.records import OptimizationCommand
from streams.serde import Codec

from .allowlist import action_of

HELP = "send a signed command (one SQL statement) to the executor; prints its command id last"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    submit = sub.add_parser("submit", help="sign and send one statement", description=HELP)
    submit.add_argument("--sql", required=True, help="the statement, e.g. 'CREATE INDEX CONCURRENTLY ...'")
    submit.add_argument("--emergency", action="store_true", help="passes the freeze-day rule (wedding days)")
    submit.add_argument("--reason", default="", help="why (kept with the command and in the audit)")


def submit(settings: Settings, sql: str, *, emergency: bool = False, reason: str = "") -> OptimizationCommand:
    """Build, sign and send one operator command; returns the signed record."""
    if not sql.strip():
        raise ValueError("--sql is empty")
    key = command_key(settings)
    record = sign(build_command("operator", action_of(sql), sql, emergency=emergency, reason=reason), key)
    send_command(settings, record)
    return record


def send_command(settings: Settings, record: OptimizationCommand) -> None:
    """Produce one signed command and wait for the broker's acknowledgement (RuntimeError if none)."""
    topic = settings.topics.commands
    value = Codec.from_settings(settings).encode_record(record, topic=topic)
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    ensure_for_producing(settings, ["commands"])  # TopicsUnavailable (a RuntimeError) says what to run
    producer = clients.producer(settings)
    producer.produce(topic, key=record.command_id.encode(), value=value, on_delivery=delivered)
    remaining = producer.flush(30)
    if remaining or errors:
        raise RuntimeError(f"the command was not delivered to {topic} ({settings.kafka_bootstrap}): {errors or 'timeout'}")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        record = submit(settings, args.sql, emergency=args.emergency, reason=args.reason)
    except (ValueError, RuntimeError) as exc:
        print(f"dbopt command submit: {exc}")
        return 1
    print(f"sent {record.action} command to {settings.topics.commands}"
          f"{' (emergency)' if record.emergency else ''}; its result will be on {settings.topics.results}")
    print(record.command_id)
    return 0
