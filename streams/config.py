"""All of dbopt's configuration, in one typed place, read from ``DBOPT_*`` variables.

Every command reads its settings through :func:`load_settings`. ``make up`` writes
``.run/env`` with the broker and database addresses; when those variables are not in
the environment, the file is read as a fallback so that a plain ``dbopt ...`` works
right after ``make up``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("DBOPT_RUN_DIR", REPO_ROOT / ".run"))
ENV_FILE = RUN_DIR / "env"


class ConfigError(ValueError):
    """A DBOPT_* variable holds a value that cannot be used."""


@dataclass(frozen=True)
class Topics:
    """Names of every dbopt topic. Override each with DBOPT_TOPIC_<NAME>."""

    query_events: str = "dbopt.query-events.v1"
    pool_snapshots: str = "dbopt.pool-snapshots.v1"
    latency_windows: str = "dbopt.latency-windows.v1"
    alerts: str = "dbopt.alerts.v1"
    commands: str = "dbopt.commands.v1"
    results: str = "dbopt.results.v1"
    dlq: str = "dbopt.dlq.v1"

    def all(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class TopicPolicy:
    """How `dbopt topics create` makes topics."""

    partitions: int = 6
    replication: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000
    # commands and results are an audit trail: kept longer, compacted by id
    command_retention_ms: int = 90 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://dbopt:dbopt@127.0.0.1:15432/dbopt"
    schema_registry_url: str | None = None
    topics: Topics = field(default_factory=Topics)
    topic_policy: TopicPolicy = field(default_factory=TopicPolicy)
    # SDK producer
    sdk_buffer_messages: int = 100_000
    sdk_linger_ms: int = 20
    sdk_compression: str = "zstd"
    sdk_statement_cache: int = 4096
    # platform calendar
    timezone: str = "UTC"
    freeze_weekdays: tuple[str, ...] = ("sat",)
    # command signing
    command_key: str | None = None

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """Parse a ``KEY=value`` file as written by ``make up`` (no shell expansion)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def _weekdays(raw: str) -> tuple[str, ...]:
    days = tuple(d.strip().lower()[:3] for d in raw.split(",") if d.strip())
    unknown = [d for d in days if d not in _WEEKDAYS]
    if unknown:
        raise ConfigError(f"DBOPT_FREEZE_WEEKDAYS has unknown day(s) {unknown}; use {','.join(_WEEKDAYS)}")
    return days


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (default: the process environment over ``.run/env``)."""
    if env is None:
        env = {**read_env_file(), **os.environ}
    base = Settings()
    topics = Topics(
        **{
            name: env.get(f"DBOPT_TOPIC_{name.upper()}", default)
            for name, default in Topics().all().items()
        }
    )
    policy = TopicPolicy(
        partitions=_int(env, "DBOPT_TOPIC_PARTITIONS", TopicPolicy.partitions, 1),
        replication=_int(env, "DBOPT_TOPIC_REPLICATION", TopicPolicy.replication, 1),
        retention_ms=_int(env, "DBOPT_TOPIC_RETENTION_MS", TopicPolicy.retention_ms, 1),
        dlq_retention_ms=_int(env, "DBOPT_DLQ_RETENTION_MS", TopicPolicy.dlq_retention_ms, 1),
        command_retention_ms=_int(env, "DBOPT_COMMAND_RETENTION_MS", TopicPolicy.command_retention_ms, 1),
    )
    freeze = env.get("DBOPT_FREEZE_WEEKDAYS")
    return Settings(
        kafka_bootstrap=env.get("DBOPT_KAFKA_BOOTSTRAP", base.kafka_bootstrap),
        database_url=env.get("DBOPT_DATABASE_URL", base.database_url),
        schema_registry_url=env.get("DBOPT_SCHEMA_REGISTRY_URL") or None,
        topics=topics,
        topic_policy=policy,
        sdk_buffer_messages=_int(env, "DBOPT_SDK_BUFFER_MESSAGES", base.sdk_buffer_messages, 1),
        sdk_linger_ms=_int(env, "DBOPT_SDK_LINGER_MS", base.sdk_linger_ms, 0),
        sdk_compression=env.get("DBOPT_SDK_COMPRESSION", base.sdk_compression),
        sdk_statement_cache=_int(env, "DBOPT_SDK_STATEMENT_CACHE", base.sdk_statement_cache, 1),
        timezone=env.get("DBOPT_TIMEZONE", base.timezone),
        freeze_weekdays=base.freeze_weekdays if freeze is None else _weekdays(freeze),
        command_key=env.get("DBOPT_COMMAND_KEY") or None,
    )
