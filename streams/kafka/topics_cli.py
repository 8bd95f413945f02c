"""``dbopt topics create``: create every dbopt topic (idempotent)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection

from confluent_kafka import KafkaException

from streams.cli_args import positive_float
from streams.config import Settings, load_settings

from .topics import TopicsUnavailable, ensure_for_producing, ensure_topics, mismatch_warnings, topic_specs

HELP = "create every dbopt topic with the configured partitions, retention and cleanup policy (idempotent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="create the missing topics, report the existing ones")
    create.add_argument("--timeout", type=positive_float, default=30.0, help="seconds to wait for the broker (default 30)")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        report = ensure_topics(settings, timeout=args.timeout)
    except KafkaException as exc:
        print(f"dbopt topics: cannot create topics on {settings.kafka_bootstrap}: {exc.args[0]}", file=sys.stderr)
        return 1
    specs = {s.name: s for s in topic_specs(settings)}
    for name in report.created:
        spec = specs[name]
        policy = spec.config["cleanup.policy"]
        print(f"created  {name}  partitions={spec.partitions} replication={spec.replication} "
              f"cleanup={policy} retention.ms={spec.config['retention.ms']}")
    for name in report.existing:
        print(f"exists   {name}")
    for line in mismatch_warnings(report):
        print(line, file=sys.stderr)
    print(f"{len(report.created)} created, {len(report.existing)} already existed")
    return 0


def ready_to_produce(settings: Settings, keys: Collection[str], command: str, *, timeout: float = 30.0) -> bool:
    """What a producing command runs first: its topics exist with the configured layout.

    Warnings (an existing topic with another partition count) and the error (topics that can be
    neither found nor created, naming ``dbopt topics create``) go to stderr, prefixed by ``command``.
    """
    try:
        report = ensure_for_producing(settings, keys, timeout=timeout)
    except TopicsUnavailable as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return False
    for line in mismatch_warnings(report):
        print(line, file=sys.stderr)
    return True
