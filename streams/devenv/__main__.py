"""``python -m streams.devenv {up,down,status}``: what ``make up`` / ``make down`` run."""

from __future__ import annotations

import argparse
import os
import sys

from streams.config import env_file, run_dir

from .kafka import DEFAULT_KAFKA_VERSION, KafkaBroker
from .postgres import PostgresCluster
from .process import StartError
from .registry import DEFAULT_REGISTRY_VERSION, SchemaRegistry


def _services() -> tuple[KafkaBroker, PostgresCluster]:
    kafka = KafkaBroker(
        run_dir=run_dir(),
        version=os.environ.get("KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
        port=int(os.environ.get("DBOPT_KAFKA_PORT", "19092")),
        controller_port=int(os.environ.get("DBOPT_KAFKA_CONTROLLER_PORT", "19093")),
    )
    postgres = PostgresCluster(run_dir=run_dir(), port=int(os.environ.get("DBOPT_PG_PORT", "15432")))
    return kafka, postgres


def registry() -> SchemaRegistry:
    """The optional schema registry (``up --with-registry``); tests start it themselves."""
    return SchemaRegistry(
        run_dir=run_dir(),
        version=os.environ.get("DBOPT_REGISTRY_VERSION", DEFAULT_REGISTRY_VERSION),
        port=int(os.environ.get("DBOPT_SCHEMA_REGISTRY_PORT", "18081")),
    )


def up(with_registry: bool = False) -> None:
    kafka, postgres = _services()
    run_dir().mkdir(parents=True, exist_ok=True)
    postgres.start()
    kafka.start()
    lines = [f"DBOPT_KAFKA_BOOTSTRAP={kafka.bootstrap}", f"DBOPT_DATABASE_URL={postgres.url}"]
    if with_registry:
        reg = registry()
        reg.start()
        # only then do dbopt commands switch to the Confluent wire format
        lines.append(f"DBOPT_SCHEMA_REGISTRY_URL={reg.url}")
    env_file().write_text("\n".join(lines) + "\n")
    print(f"wrote {env_file()}")


def down() -> None:
    kafka, postgres = _services()
    registry().stop()
    kafka.stop()
    postgres.stop()


def status() -> int:
    kafka, postgres = _services()
    k_ok, p_ok = kafka.ready(), postgres.ready()
    print(f"kafka      {kafka.bootstrap:<22} {'up' if k_ok else 'down'}")
    print(f"postgresql 127.0.0.1:{postgres.port:<12} {'up' if p_ok else 'down'}")
    reg = registry()
    print(f"registry   {reg.url:<22} {'up' if reg.ready() else 'down'} (optional: up --with-registry)")
    return 0 if k_ok and p_ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streams.devenv",
        description="Start, stop or check the local Kafka broker and PostgreSQL used by tests and the demo.",
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--with-registry",
        action="store_true",
        help="also start a Confluent-compatible schema registry (Apicurio) and write "
        "DBOPT_SCHEMA_REGISTRY_URL to .run/env, so dbopt uses the Confluent wire format",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(with_registry=args.with_registry)
        elif args.action == "down":
            down()
        else:
            return status()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
