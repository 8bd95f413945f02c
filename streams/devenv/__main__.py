"""``python -m streams.devenv {up,down,status}``: what ``make up`` / ``make down`` run."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from streams.config import env_file, run_dir

from .kafka import DEFAULT_KAFKA_VERSION, KafkaBroker
from .postgres import PostgresCluster
from .process import StartError
from .registry import DEFAULT_REGISTRY_VERSION, SchemaRegistry


def _services(secure: bool = False) -> tuple[KafkaBroker, PostgresCluster]:
    kafka = KafkaBroker(
        run_dir=run_dir(),
        version=os.environ.get("KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
        port=int(os.environ.get("DBOPT_KAFKA_PORT", "19092")),
        controller_port=int(os.environ.get("DBOPT_KAFKA_CONTROLLER_PORT", "19093")),
        secure_port=int(os.environ.get("DBOPT_KAFKA_SECURE_PORT", "19094")) if secure else None,
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


def secure_env_file() -> Path:
    """``up --secure``: the variables of a client of the SASL_SSL listener (beside ``.run/env``)."""
    return env_file().with_name("env-secure")


def up(with_registry: bool = False, secure: bool = False, kafka_only: bool = False) -> None:
    kafka, postgres = _services(secure)
    run_dir().mkdir(parents=True, exist_ok=True)
    if not kafka_only:
        postgres.start()
    kafka.start()
    lines = [f"DBOPT_KAFKA_BOOTSTRAP={kafka.bootstrap}"]
    if not kafka_only:
        lines.append(f"DBOPT_DATABASE_URL={postgres.url}")
    secure_env_file().unlink(missing_ok=True)
    if kafka.secure is not None and kafka.secure_listening():
        secure_lines = [f"{name}={value}" for name, value in kafka.secure.client_env().items()]
        secure_env_file().write_text("\n".join([*secure_lines, *lines[1:]]) + "\n")
        secure_env_file().chmod(0o600)
        print(f"wrote {secure_env_file()}")
    if with_registry:
        reg = registry()
        reg.start()
        # only then do dbopt commands switch to the Confluent wire format
        lines.append(f"DBOPT_SCHEMA_REGISTRY_URL={reg.url}")
    env_file().write_text("\n".join(lines) + "\n")
    print(f"wrote {env_file()}")


def down(kafka_only: bool = False) -> None:
    kafka, postgres = _services()
    registry().stop()
    kafka.stop()
    if not kafka_only:
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
        "--secure",
        action="store_true",
        help="give the broker an additional SASL_SSL listener (SCRAM-SHA-512, a dev CA; port "
        "DBOPT_KAFKA_SECURE_PORT, default 19094) and write its client variables to .run/env-secure",
    )
    parser.add_argument("--kafka-only", action="store_true", help="start (or stop) only the broker, not PostgreSQL")
    parser.add_argument(
        "--with-registry",
        action="store_true",
        help="also start a Confluent-compatible schema registry (Apicurio) and write "
        "DBOPT_SCHEMA_REGISTRY_URL to .run/env, so dbopt uses the Confluent wire format",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            up(with_registry=args.with_registry, secure=args.secure, kafka_only=args.kafka_only)
        elif args.action == "down":
            down(kafka_only=args.kafka_only)
        else:
            return status()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
