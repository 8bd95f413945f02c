"""``dbopt topics create``: create every dbopt topic (idempotent)."""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaException

from streams.config import load_settings
from streams.cli_args import positive_float

from .topics import ensure_topics, topic_specs

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
    for name, (have, want) in report.partition_mismatch.items():
        print(f"warning: {name} has {have} partitions, the configuration asks for {want} "
              "(Kafka cannot shrink a topic; change DBOPT_TOPIC_PARTITIONS or recreate it)", file=sys.stderr)
    print(f"{len(report.created)} created, {len(report.existing)} already existed")
    return 0
