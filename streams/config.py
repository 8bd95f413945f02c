"""All of dbopt's configuration, in one typed place, read from ``DBOPT_*`` variables.

Each setting is declared once, as a pydantic field with its type, default, bounds and doc.
Its variable is the group's prefix + the field name in upper case
(``ExecutorSettings.lock_timeout_ms`` -> ``DBOPT_EXECUTOR_LOCK_TIMEOUT_MS``), unless the field
carries ``Env("DBOPT_...")`` with a historical name. Adding a stage's settings:

    class NotifySettings(Group):
        \"\"\"How `dbopt notify` delivers alerts (DBOPT_NOTIFY_*).\"\"\"

        env_prefix: ClassVar[str] = "DBOPT_NOTIFY_"
        retry_max_s: float = Field(60.0, gt=0, description="Longest wait between two delivery attempts")
        smtp_password: SecretStr | None = Field(None, description="SMTP password (secret)")

    class Settings(...):
        notify: NotifySettings = Field(default_factory=NotifySettings, description="...")

:func:`load_settings` is the one place that reads the environment: the process environment
over ``.run/env`` (written by ``make up``, found in :func:`run_dir`). It rejects, with the
variable's name, an unknown ``DBOPT_*`` variable (naming the nearest known one) and any value
that does not fit its type, so a bad setting stops a command at start (``dbopt`` exits 2).
``Settings()`` itself reads nothing: it is the defaults, ``Settings(field=...)`` and
``settings.with_overrides(...)`` are validated copies. Secrets are ``SecretStr`` (their value
only through ``.get_secret_value()``), never shown by ``repr``, logs or error messages.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping, Self, TypeVar, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.domain.vocabulary import (
    DEFAULT_CONTEXT_RULES,
    DEFAULT_SLO_P95_MS,
    SEASONS,
    ContextRule,
    Criticality,
    Season,
    Weekday,
)

MASK = "**********"  # what a secret looks like in output
PROJECT_NAME = "dbopt-streams"  # [project].name in pyproject.toml: marks this project's checkout

# DBOPT_* variables that are not settings but are read elsewhere, so never "unknown"
OTHER_VARIABLES: dict[str, str] = {
    "DBOPT_RUN_DIR": "run directory (.run/: env file, local servers' data, demo logs); see run_dir()",
    "DBOPT_KAFKA_PORT": "make up: port of the local broker",
    "DBOPT_KAFKA_CONTROLLER_PORT": "make up: controller port of the local broker",
    "DBOPT_KAFKA_SECURE_PORT": "make up (--secure): port of the local broker's SASL_SSL listener",
    "DBOPT_PG_PORT": "make up: port of the local PostgreSQL",
    "DBOPT_SCHEMA_REGISTRY_PORT": "make up --with-registry: port of the local schema registry",
    "DBOPT_REGISTRY_VERSION": "make up --with-registry: version of the local schema registry",
}


class ConfigError(ValueError):
    """A DBOPT_* variable holds a value that cannot be used."""


# ---------------------------------------------------------------------------------------------
# value types: how a variable's text becomes a value, and what is checked


@dataclass(frozen=True)
class Env:
    """Field metadata: the field's variable has this (historical) name, not prefix + field name."""

    name: str


def _split_commas(value: object) -> object:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; an empty string is an empty list."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _json(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


T = TypeVar("T")
S = TypeVar("S")
# a comma-separated variable (DBOPT_FREEZE_WEEKDAYS=sat,sun); empty means an empty list
CommaList = Annotated[tuple[T, ...], BeforeValidator(_split_commas)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
JsonPositive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]  # a JSON number, not "5" or true


def _known_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone: use an IANA name such as UTC or Europe/Berlin") from None
    return name


def _weekday_names(value: object) -> object:
    """Accept ``Saturday`` or ``SAT`` for ``sat`` (runs before the comma split, so splits itself)."""
    value = _split_commas(value)
    if isinstance(value, (tuple, list)):
        return tuple(day.lower()[:3] if isinstance(day, str) else day for day in value)
    return value


def _host_port(item: str) -> bool:
    host, _, port = item.rpartition(":")
    return bool(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


def _bootstrap(value: str) -> str:
    servers = [s.strip() for s in value.split(",")]
    if not all(_host_port(s) for s in servers):
        raise ValueError("must be a comma-separated list of host:port")
    return ",".join(servers)


def _url(value: str, schemes: tuple[str, ...], what: str, *, host_required: bool = True) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in schemes or (host_required and not parts.hostname) or not port_ok:
        raise ValueError(f"must be {what}")
    return value


def _database_url(value: SecretStr) -> SecretStr:
    # no host is libpq's local socket (postgresql:///db)
    what = "a postgresql://user:password@host:port/database URL"
    _url(value.get_secret_value(), ("postgresql", "postgres"), what, host_required=False)
    return value


def _schema_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_$]{0,62}", name) or name.startswith("pg_"):
        raise ValueError(f"{name!r} is not a plain lowercase schema name")
    return name


def _http_url(value: str) -> str:
    return _url(value, ("http", "https"), "an http:// or https:// URL").rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]  # http(s)://host[:port][/path], no trailing slash


class SecretUrl(SecretStr):
    """A URL holding a password: shown with the password masked, host, port and database kept."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password=`` parameter) replaced by stars."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    if parts.query:
        query = [(k, MASK if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return parts.geturl()


def _context_rules(value: object) -> object:
    """DBOPT_CONTEXT_RULES: ``{"booking": {"criticality": "critical", "tables": ["bookings"]}, ...}``.

    Replaces the default rules; object order is the tie-break between equally critical contexts.
    """
    value = _json(value)
    if not isinstance(value, dict):
        return value
    rules = []
    for context, rule in value.items():
        if not isinstance(rule, dict) or set(rule) != {"criticality", "tables"}:
            raise ValueError(f"{context!r} needs exactly the keys 'criticality' and 'tables'")
        tables = rule["tables"]
        if not isinstance(tables, list) or not all(isinstance(t, str) and t for t in tables):
            raise ValueError(f"{context!r}: tables must be a list of table names")
        rules.append({"context": context, "criticality": rule["criticality"], "tables": [t.lower() for t in tables]})
    return rules


def _rules_as_env(rules: tuple[ContextRule, ...]) -> dict[str, dict[str, Any]]:
    return {r.context: {"criticality": r.criticality, "tables": list(r.tables)} for r in rules}


def _over_defaults(defaults: Mapping[str, float]) -> BeforeValidator:
    """A JSON object whose keys replace those of ``defaults`` (the others are kept)."""

    def merge(value: object) -> object:
        value = _json(value)
        return {**defaults, **value} if isinstance(value, dict) else value

    return BeforeValidator(merge)


# ---------------------------------------------------------------------------------------------
# the settings


class Overridable:
    """``with_overrides``: the way to copy settings with changes (validated, unlike ``model_copy``)."""

    def with_overrides(self, **changes: Any) -> Self:
        """A validated copy with some fields replaced (a group is replaced whole)."""
        assert isinstance(self, BaseModel)  # mixed into the pydantic settings models only
        return _validated(type(self), lambda: type(self)(**{**dict(self), **changes}))


class Group(Overridable, BaseModel):
    """A group of settings read from ``<env_prefix><FIELD>`` (or the field's ``Env(...)`` name)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)
    env_prefix: ClassVar[str]


class ProbedGroup(Group):
    """The settings of a service with a probe server of its own (``streams.kafka.health``):
    ``<env_prefix>PROBE_HOST`` and ``<env_prefix>PROBE_PORT``, declared here once."""

    probe_host: str = Field("127.0.0.1", min_length=1, description="Address of the /metrics, /healthz, /readyz server")
    probe_port: int = Field(0, ge=0, le=65535, description="Port of that server; 0: no server")


class Topics(Group):
    """Names of every dbopt topic (DBOPT_TOPIC_<NAME>)."""

    env_prefix: ClassVar[str] = "DBOPT_TOPIC_"
    query_events: str = Field("dbopt.query-events.v1", min_length=1, description="QueryEvent records from the SDK")
    pool_snapshots: str = Field("dbopt.pool-snapshots.v1", min_length=1, description="PoolSnapshot records")
    latency_windows: str = Field(
        "dbopt.latency-windows.v1", min_length=1, description="WindowStats of closed windows (worker output)"
    )
    alerts: str = Field("dbopt.alerts.v1", min_length=1, description="Alert records of the detector")
    commands: str = Field("dbopt.commands.v1", min_length=1, description="signed OptimizationCommand records")
    results: str = Field("dbopt.results.v1", min_length=1, description="OptimizationResult records of the executor")
    dlq: str = Field("dbopt.dlq.v1", min_length=1, description="DeadLetter records: what could not be processed")
    notifications: str = Field(
        "dbopt.notifications.v1", min_length=1, description="NotificationResult records of dbopt notify"
    )
    server_snapshots: str = Field(
        "dbopt.server-snapshots.v1", min_length=1, description="ServerSnapshot records of dbopt collect"
    )
    statement_stats: str = Field(
        "dbopt.statement-stats.v1", min_length=1, description="StatementStats records (pg_stat_statements deltas)"
    )
    statement_sketches: str = Field(
        "dbopt.statement-sketches.v1", min_length=1,
        description="StatementSketch records of the SDK's sketch mode (partitioned like query_events)",
    )

    def all(self) -> dict[str, str]:
        """Field name -> topic name, for every topic."""
        return dict(self)


class TopicPolicy(Group):
    """How `dbopt topics create` makes topics (DBOPT_TOPIC_*)."""

    env_prefix: ClassVar[str] = "DBOPT_TOPIC_"
    partitions: int = Field(6, ge=1, description="Partitions of every dbopt topic")
    replication: int = Field(1, ge=1, description="Replication factor of every dbopt topic")
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=1, description="Retention of the data topics (ms)")
    dlq_retention_ms: Annotated[int, Env("DBOPT_DLQ_RETENTION_MS")] = Field(
        30 * 24 * 3600 * 1000, ge=1, description="Retention of the dead-letter topic (ms)"
    )
    command_retention_ms: Annotated[int, Env("DBOPT_COMMAND_RETENTION_MS")] = Field(
        90 * 24 * 3600 * 1000,
        ge=1,
        description="Retention of the commands and results topics, an audit trail compacted by id (ms)",
    )


class DomainSettings(Group):
    """Business contexts and their p95 SLOs (DBOPT_CONTEXT_RULES, DBOPT_SLO_P95_MS, ...)."""

    env_prefix: ClassVar[str] = "DBOPT_"
    context_rules: Annotated[
        tuple[ContextRule, ...],
        BeforeValidator(_context_rules),
        PlainSerializer(_rules_as_env, when_used="json"),
    ] = Field(
        DEFAULT_CONTEXT_RULES,
        description='JSON {"context": {"criticality": "critical|high|medium", "tables": [...]}, ...}: '
        "which tables make a query belong to a context; replaces the default rules, "
        "object order breaks ties between equally critical contexts",
    )
    default_context: str = Field("other", description="Context of a query that touches no table of a rule")
    default_criticality: Criticality = Field("medium", description="Criticality of the default context")
    slo_p95_ms: Annotated[dict[str, JsonPositive], _over_defaults(DEFAULT_SLO_P95_MS)] = Field(
        DEFAULT_SLO_P95_MS,
        description="JSON object context -> p95 SLO (ms), merged over the defaults",
    )
    default_slo_p95_ms: Annotated[PositiveFloat, Env("DBOPT_SLO_DEFAULT_P95_MS")] = Field(
        200.0, description="p95 SLO (ms) of a context without its own"
    )
    season_slo_multipliers: Annotated[dict[Season, JsonPositive], _over_defaults(dict.fromkeys(SEASONS, 1.0))] = Field(
        dict.fromkeys(SEASONS, 1.0),
        description="JSON object season -> factor: SLO threshold = base SLO x factor of the window's season",
    )


class IngestSettings(Group):
    """Limits the ingest stage enforces on every QueryEvent (DBOPT_INGEST_*)."""

    env_prefix: ClassVar[str] = "DBOPT_INGEST_"
    max_age_ms: int = Field(3600 * 1000, ge=1, description="Oldest accepted event, relative to now (ms)")
    max_duration_ms: float = Field(
        24 * 3600 * 1000.0, gt=0, description="Longest accepted duration_ms; longer is a broken clock or value (ms)"
    )
    max_future_skew_ms: int = Field(5 * 60 * 1000, ge=0, description="Furthest accepted event in the future (ms)")
    max_query_text: int = Field(16_384, ge=1, description="Longest query text kept (characters)")
    max_tables: int = Field(64, ge=1, description="Most tables kept per event")
    max_string: int = Field(256, ge=1, description="Longest kept value of other string fields (characters)")
    max_fingerprints_per_service: int = Field(
        1000, ge=1, description="Distinct query fingerprints tracked per service; more go to an overflow bucket"
    )
    statement_types: Annotated[CommaList[str], AfterValidator(lambda types: tuple(t.upper() for t in types))] = Field(
        ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UTILITY"),
        description="Comma list of accepted statement types",
    )
    statement_cache: int = Field(4096, ge=1, description="Normalized statements cached by the ingest stage")


class DetectSettings(Group):
    """Alert conditions and their hysteresis (DBOPT_DETECT_*)."""

    env_prefix: ClassVar[str] = "DBOPT_DETECT_"
    window_kinds: CommaList[Literal["tumbling", "hopping"]] = Field(
        ("tumbling",), min_length=1, description="Comma list of window kinds the detector judges: tumbling, hopping"
    )
    min_samples: int = Field(20, ge=1, description="Fewest queries in a window for it to be judged")
    fire_after: int = Field(2, ge=1, description="Consecutive bad windows before an alert fires")
    resolve_after: int = Field(2, ge=1, description="Consecutive good windows before a firing alert resolves")
    regression_factor: float = Field(3.0, ge=1.0, description="p95 above baseline x this factor is a regression")
    regression_floor_ms: float = Field(10.0, ge=0, description="A regression must also exceed the baseline by this (ms)")
    baseline_windows: int = Field(10, ge=1, description="Windows the baseline p95 is computed over")
    baseline_min_windows: int = Field(3, ge=1, description="Windows needed before regressions are judged")


Aggressiveness = Literal["recommend", "conservative", "moderate", "aggressive"]


class ExecutorSettings(ProbedGroup):
    """How `dbopt executor` applies commands (DBOPT_EXECUTOR_*, DBOPT_AGGRESSIVENESS, ...)."""

    env_prefix: ClassVar[str] = "DBOPT_EXECUTOR_"
    aggressiveness: Annotated[
        Aggressiveness, Env("DBOPT_AGGRESSIVENESS"), BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
    ] = Field(
        "moderate",
        description="Automatic actions applied: recommend (none: every automatic command waits for an operator's "
        "approval in dbopt serve), conservative (ANALYZE, VACUUM), moderate (+ CREATE INDEX, "
        "REINDEX), aggressive (+ DROP INDEX; acts as moderate in peak and proposal season)",
    )
    max_indexes_per_table: Annotated[int, Env("DBOPT_MAX_INDEXES_PER_TABLE")] = Field(
        10, ge=1, description="No command creates an index on a table that already has this many"
    )
    lock_timeout_ms: int = Field(5_000, ge=1, description="lock_timeout of the executor's statements (ms)")
    statement_timeout_ms: int = Field(3_600_000, ge=1, description="statement_timeout of the executor's statements (ms)")
    executor_id: Annotated[str, Env("DBOPT_EXECUTOR_ID")] = Field(
        "", description="Name of this executor in the audit table; empty: host:pid"
    )
    audit_schema: Annotated[str, Env("DBOPT_AUDIT_SCHEMA")] = Field(
        "dbopt", min_length=1, description="Schema of the executor's audit table"
    )
    consumer_group: Annotated[str, Env("DBOPT_EXECUTOR_GROUP")] = Field(
        "dbopt-executor", min_length=1, description="Kafka consumer group of the executor"
    )
    poll_timeout_s: float = Field(1.0, ge=0.01, description="Longest wait for a command in one poll (s)")
    db_retry_max_s: float = Field(
        30.0, ge=0.1, description="PostgreSQL unavailable: reconnect waits double up to this (s)"
    )
    deferred_recheck_s: float = Field(60.0, ge=0.1, description="How often deferred commands are re-examined (s)")
    advisory_lock_key: Annotated[int, Env("DBOPT_EXECUTOR_LOCK_KEY")] = Field(
        0x6462_6F70_7465_7865,  # "dboptexe"
        ge=0,
        le=2**63 - 1,
        description="Session advisory lock held while an executor works: two never act at once",
    )
    max_command_age_s: Annotated[float, Env("DBOPT_EXECUTOR_MAX_COMMAND_AGE")] = Field(
        24 * 3600.0, gt=0, description="A command older than this (s) when it first arrives is not applied but "
        "reported expired with its age: a new executor never replays history blindly"
    )
    critical_contexts: CommaList[str] = Field(
        ("booking", "payment", "vendor_search", "timeline"),
        description="Comma list of contexts whose commands run first when several are due at once",
    )
    support_services: CommaList[str] = Field(
        ("notification", "analytics", "integration"),
        description="Comma list of service (or context) name stems whose commands run second; the rest run last",
    )
    stabilize_critical_s: float = Field(60.0, ge=0, description="Pause after a critical table's commands ran (s)")
    stabilize_support_s: float = Field(30.0, ge=0, description="Pause after a support table's commands ran (s)")
    stabilize_rest_s: float = Field(15.0, ge=0, description="Pause after any other table's commands ran (s)")
    sequence_hold_max_s: float = Field(
        900.0, ge=0, description="Longest the sequence waits for the changed contexts' windows to come back under "
        "their SLO before the next table (s)"
    )
    database: str = Field(
        "", description="Name (in DBOPT_DATABASES) of the database this executor serves; empty: the default one"
    )


class AdviseSettings(ProbedGroup):
    """How `dbopt advisor` / `dbopt analyze` choose indexes and verify them (DBOPT_ADVISE_*)."""

    env_prefix: ClassVar[str] = "DBOPT_ADVISE_"
    min_cost: float = Field(1000.0, ge=0, description="Planner cost (generic plan) below which a query is not worth an index")
    min_improvement: float = Field(
        0.5, gt=0, lt=1, description="A candidate must cut the query's plan cost by at least this fraction"
    )
    max_index_columns: int = Field(4, ge=1, description="Most columns of a proposed index")
    index_write_cost: float = Field(
        10.0, ge=0, description="Planner cost of maintaining one index per written row, weighed against read savings"
    )
    stale_ratio: float = Field(
        0.1, ge=0, description="Statistics are stale when rows modified since ANALYZE exceed this fraction of live rows"
    )
    stale_min_rows: int = Field(1000, ge=0, description="... and at least this many rows")
    statement_timeout_ms: int = Field(5_000, ge=1, description="statement_timeout of the advisor's planner queries (ms)")
    verify_windows: int = Field(3, ge=1, description="Windows after a new index that judge it")
    verify_min_gain: float = Field(0.2, ge=0, description="p95 gain (fraction) needed to keep a new index")
    write_tolerance: float = Field(
        0.5, ge=0, description="Relative growth of the table's write p95 tolerated before a rollback"
    )
    write_floor_ms: float = Field(1.0, ge=0, description="... and absolute growth (ms)")
    write_min_count: int = Field(
        20, ge=1, description="A write fingerprint's window judges writes only with at least this many statements "
        "(the p95 of fewer is about their slowest one)"
    )
    verify_timeout_s: float = Field(
        900.0, ge=1.0, description="Without after-windows for this long after the index was applied, keep it (s)"
    )
    history_windows: int = Field(
        30, ge=2, description="Closed windows remembered per fingerprint, for write rates and before figures"
    )
    consumer_group: Annotated[str, Env("DBOPT_ADVISOR_GROUP")] = Field(
        "dbopt-advisor", min_length=1, description="Kafka consumer group of the advisor"
    )
    poll_timeout_s: float = Field(0.5, ge=0.01, description="Longest wait for a record in one poll (s)")
    partial_max_distinct: int = Field(
        10, ge=1, description="A partial-index predicate only on a column with at most this many distinct values (pg_stats)"
    )
    partial_min_frequency: float = Field(
        0.05, gt=0, le=1, description="... and only for values at least this frequent in pg_stats.most_common_vals"
    )
    sample_rows: int = Field(
        100_000, ge=100, description="Rows copied into the scratch schema to validate a GIN/GiST index by a real build"
    )
    sample_timeout_ms: int = Field(30_000, ge=100, description="statement_timeout of each step of a sampled build (ms)")
    sample_runs: int = Field(5, ge=1, le=50, description="EXPLAIN ANALYZE runs per measurement of a sampled build (median)")
    sample_schema: str = Field(
        "dbopt_scratch", min_length=1, description="Scratch schema of sampled builds (created if missing, copies dropped)"
    )
    sweep_interval_s: Annotated[int | None, Env("DBOPT_SWEEP_INTERVAL_S")] = Field(
        None, ge=60, description="Seconds between maintenance sweeps; unset: 14400 in peak season, 43200 otherwise"
    )
    vacuum_dead_ratio: float = Field(
        0.2, gt=0, description="VACUUM (ANALYZE) when dead tuples exceed this fraction of live ones (and autovacuum is behind)"
    )
    vacuum_min_dead: int = Field(1000, ge=0, description="... and there are at least this many dead tuples")
    reindex_bloat_ratio: float = Field(
        0.3, gt=0, lt=1, description="REINDEX INDEX CONCURRENTLY when this fraction of an index is estimated bloat"
    )
    reindex_min_bytes: int = Field(8 * 2**20, ge=0, description="... and the index is at least this large (bytes)")
    unused_min_age_days: float = Field(
        35.0, ge=0, description="An index without scans is reported once the statistics are this old (days)"
    )
    maintenance_verify_delay_s: float = Field(
        5.0, ge=0, description="Wait after an applied VACUUM/REINDEX/ANALYZE before checking its effect (s)"
    )


class WindowSettings(Group):
    """Event-time windows and the Faust worker that computes them (DBOPT_WINDOW_*, DBOPT_WORKER_*).

    Tumbling and hopping windows are aligned to the epoch; ``hopping_ms`` must be a multiple of
    ``hop_ms``. A window [s, e) closes once a partition's watermark reaches e + ``grace_ms``. A
    partition that is caught up and has seen no event for ``idle_timeout_ms`` has its watermark
    moved to (wall clock - ``idle_timeout_ms``) by the worker's tick, so its windows still close.
    """

    env_prefix: ClassVar[str] = "DBOPT_WINDOW_"
    tumbling_ms: int = Field(60_000, ge=1, description="Tumbling window size (ms)")
    hop_ms: int = Field(60_000, ge=1, description="Advance of the hopping windows (ms)")
    hopping_ms: int = Field(300_000, ge=1, description="Hopping window size (ms), a multiple of DBOPT_WINDOW_HOP_MS")
    grace_ms: int = Field(10_000, ge=0, description="How long after its end a window still takes late events (ms)")
    idle_timeout_ms: int = Field(
        15_000, ge=0, description="A caught-up partition without events this long has its watermark advanced (ms)"
    )
    allowed_lateness_ms: int = Field(
        15_000, ge=0, description="An idle partition's watermark is moved to wall clock minus this (ms): an event "
        "older than that which arrives afterwards finds its window emitted and goes to the DLQ (reason late)"
    )
    tick_interval_ms: Annotated[int, Env("DBOPT_WORKER_TICK_INTERVAL_MS")] = Field(
        5_000, ge=10, description="How often the worker's tick closes windows (ms)"
    )
    app_id: Annotated[str, Env("DBOPT_WORKER_APP_ID")] = Field(
        "dbopt-worker", min_length=1,
        description="Consumer group of the windows stage and prefix of the worker's topics (Faust agents: <id>-agents)"
    )
    store: Annotated[Literal["rocksdb://", "memory://"], Env("DBOPT_WORKER_STORE")] = Field(
        "rocksdb://", description="Faust table store: rocksdb:// (durable) or memory://"
    )
    data_dir: Annotated[str | None, Env("DBOPT_WORKER_DATA_DIR")] = Field(
        None, description="RocksDB directory; unset: <run dir>/faust/<app id>-<host>-<web port>"
    )
    web_host: Annotated[str, Env("DBOPT_WORKER_WEB_HOST")] = Field(
        "127.0.0.1", min_length=1, description="Address the worker's /metrics and health routes bind to"
    )
    web_port: Annotated[int, Env("DBOPT_WORKER_WEB_PORT")] = Field(
        6066, ge=1, le=65535, description="Port of the worker's /metrics and health routes"
    )
    batch_max: Annotated[int, Env("DBOPT_WORKER_BATCH_MAX")] = Field(
        2000, ge=1, description="Most events the worker takes in one batch"
    )
    batch_within_ms: Annotated[int, Env("DBOPT_WORKER_BATCH_WITHIN_MS")] = Field(
        200, ge=1, description="Longest wait to fill a batch (ms)"
    )
    commit_interval_ms: Annotated[int, Env("DBOPT_WORKER_COMMIT_INTERVAL_MS")] = Field(
        1_000, ge=10, description="How often the windows stage writes its changelog and commits offsets (ms)"
    )
    session_timeout_ms: Annotated[int, Env("DBOPT_WORKER_SESSION_TIMEOUT_MS")] = Field(
        10_000, ge=6_000, le=300_000,
        description="Kafka session timeout of the windows stage: a crashed worker's partitions move on after this (ms)",
    )
    delivery_timeout_ms: Annotated[int, Env("DBOPT_WORKER_DELIVERY_TIMEOUT_MS")] = Field(
        60_000, ge=1_000,
        description="How long the windows stage's records may wait for the broker; then the stage starts again "
        "from its last commit on new clients (ms)",
    )

    @model_validator(mode="after")
    def _hopping_is_whole_hops(self) -> Self:
        if self.hopping_ms % self.hop_ms:
            raise ValueError(
                f"DBOPT_WINDOW_HOPPING_MS={self.hopping_ms} must be a multiple of DBOPT_WINDOW_HOP_MS={self.hop_ms}"
            )
        return self


class OtlpSettings(Group):
    """The OpenTelemetry receiver, `dbopt otlp` (DBOPT_OTLP_*)."""

    env_prefix: ClassVar[str] = "DBOPT_OTLP_"
    host: str = Field("127.0.0.1", min_length=1, description="Address `dbopt otlp` listens on for OTLP/HTTP")
    port: int = Field(4318, ge=0, le=65535, description="Port of `dbopt otlp` (4318: the OTLP/HTTP default; 0: any free)")
    bearer_token: SecretStr | None = Field(
        None, description="When set, OTLP requests need `Authorization: Bearer <token>` (secret)"
    )
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest OTLP request body after gzip decompression (bytes); larger: 413"
    )
    max_statement: int = Field(
        100_000, ge=1, description="Longest statement text parsed (characters); a longer span is rejected"
    )
    statement_cache: int = Field(4096, ge=1, description="Normalized statements cached by `dbopt otlp`")
    max_pending_events: int = Field(
        100_000, ge=1, description="QueryEvents waiting for the broker's acknowledgement; beyond: 503 + Retry-After"
    )
    delivery_timeout_s: PositiveFloat = Field(
        10.0, description="How long a request waits for the broker to acknowledge its events before a 503 (s)"
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After of a 503 answer (s): OTLP clients retry then")
    consumer_group: str = Field("dbopt-otlp", min_length=1, description="Consumer group of `dbopt otlp --from-kafka`")


def _rate(value: str) -> str:
    from streams.notify.policy import parse_rate  # the one rate parser; imported late (it is a stage module)

    parse_rate(value)
    return value


NotifyRate = Annotated[str, AfterValidator(_rate)]


class NotifySettings(ProbedGroup):
    """How `dbopt notify` tells people (DBOPT_NOTIFY_*): channels, routes, rate limits, retries.

    A channel is on when its settings are there (`dbopt notify --check` says which); see docs/notify.md.
    """

    env_prefix: ClassVar[str] = "DBOPT_NOTIFY_"
    routes: str | None = Field(None, description="YAML routing file (docs/notify.md); unset: the default routes")
    slack_webhook_url: SecretStr | None = Field(
        None, description="Slack incoming webhook URL (secret: it holds the token); unset: Slack off"
    )
    pagerduty_url: HttpUrl = Field(
        "https://events.pagerduty.com/v2/enqueue", description="PagerDuty Events API v2 enqueue URL"
    )
    pagerduty_routing_key: SecretStr | None = Field(
        None, description="PagerDuty integration (routing) key (secret); unset: PagerDuty off"
    )
    smtp_url: Annotated[str | None, AfterValidator(lambda v: v and _url(v, ("smtp",), "smtp://host:port"))] = Field(
        None, description="SMTP server, smtp://host:port; unset: e-mail off"
    )
    smtp_starttls: bool = Field(False, description="Upgrade the SMTP connection with STARTTLS")
    smtp_ca_file: str | None = Field(
        None, description="CA bundle (PEM) that verifies the SMTP server's certificate; unset: the system's CA store"
    )
    smtp_user: str | None = Field(None, description="SMTP login name; unset: no login")
    smtp_password: SecretStr | None = Field(None, description="SMTP password (secret)")
    email_from: str | None = Field(None, description="Sender address of the e-mails")
    email_to: CommaList[str] = Field((), description="Comma list of recipient addresses")
    twilio_url: HttpUrl = Field("https://api.twilio.com", description="Base URL of Twilio's REST API")
    twilio_account_sid: str | None = Field(None, description="Twilio Account SID; unset: SMS off")
    twilio_auth_token: SecretStr | None = Field(None, description="Twilio auth token (secret)")
    sms_from: str | None = Field(None, description="Sending number (E.164) of the SMS")
    sms_to: CommaList[str] = Field((), description="Comma list of numbers (E.164) that get the SMS, each on its own")
    webhook_url: SecretStr | None = Field(
        None, description="Generic webhook URL (secret: it may hold a token); unset: webhook off"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the webhook's X-Dbopt-Signature header (secret); required with the URL"
    )
    slack_rate: NotifyRate = Field("20/1m", description="Slack rate limit COUNT/PERIOD (s, m, h) or none")
    email_rate: NotifyRate = Field("10/1m", description="E-mail rate limit COUNT/PERIOD or none")
    sms_rate: NotifyRate = Field("5/10m", description="SMS rate limit per number, COUNT/PERIOD or none")
    pagerduty_rate: NotifyRate = Field("none", description="PagerDuty rate limit COUNT/PERIOD or none")
    webhook_rate: NotifyRate = Field("none", description="Webhook rate limit COUNT/PERIOD or none")
    timeout_s: float = Field(10.0, gt=0, description="Longest wait for one delivery attempt (s)")
    max_attempts: int = Field(8, ge=1, description="Attempts before a delivery is given up (recorded as failed)")
    retry_base_s: float = Field(1.0, gt=0, description="Wait after the first failed attempt; doubles each time (s)")
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between two attempts, Retry-After aside (s)")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failed attempts that open a channel's breaker")
    breaker_cooldown_s: float = Field(60.0, gt=0, description="Open breaker: wait before one probe attempt (s)")
    idle_poll_s: float = Field(1.0, gt=0, description="A channel worker looks at the ledger at least this often (s)")
    result_statuses: CommaList[
        Literal["applied", "rejected", "deferred", "failed", "duplicate", "rolled_back", "kept"]
    ] = Field(
        ("applied", "rolled_back", "failed", "deferred"),
        description="Comma list of result statuses people are told about",
    )
    consumer_group: Annotated[str, Env("DBOPT_NOTIFY_GROUP")] = Field(
        "dbopt-notify", min_length=1, description="Kafka consumer group of dbopt notify"
    )
    session_timeout_ms: int = Field(
        10_000, ge=6_000, le=300_000,
        description="Kafka session timeout of notify's consumer: a crashed notify's partitions move on after this (ms)",
    )


class CollectSettings(ProbedGroup):
    """`dbopt collect`: the database's own view, pg_stat_activity and pg_stat_statements (DBOPT_COLLECT_*)."""

    env_prefix: ClassVar[str] = "DBOPT_COLLECT_"
    interval_s: PositiveFloat = Field(10.0, description="How often the database is read (s)")
    database_url: SecretUrl | None = Field(
        None, description="Database to read, as a read-only role holding pg_monitor (secret: password masked); "
        "unset: DBOPT_DATABASE_URL"
    )
    name: str = Field("", description="Name of the target in the records (server); empty: host:port/database")
    statement_timeout_ms: int = Field(5_000, ge=1, description="statement_timeout of collect's queries (ms)")
    retry_max_s: PositiveFloat = Field(60.0, description="Database down: the waits between attempts double up to this (s)")
    all_databases: bool = Field(
        False, description="Read the statements of every database of the server, not only the connected one's"
    )
    max_statements: int = Field(
        5_000, ge=1, description="Most StatementStats records per interval (the largest total time first)"
    )
    min_calls: int = Field(
        20, ge=1, description="Fewest calls in an interval for a statement's mean time to be judged against its SLO"
    )
    fire_after: int = Field(3, ge=1, description="Consecutive intervals over the SLO before a statement alert fires")
    resolve_after: int = Field(3, ge=1, description="Consecutive intervals under it before the alert resolves")
    consumer_group: str = Field("dbopt-collect", min_length=1, description="Kafka consumer group of dbopt collect")


class PoolSettings(Group):
    """Pool alerts, the connection budget and pool-size advice, in `dbopt worker` (DBOPT_POOLS_*)."""

    env_prefix: ClassVar[str] = "DBOPT_POOLS_"
    utilization: float = Field(
        0.75, gt=0, le=1, description="A pool is under pressure when in-use / max_size is at least this"
    )
    sustain_s: float = Field(
        15.0, ge=0, description="Pressure this long fires a pool (or budget) alert; a waiting client or a checkout "
        "timeout fires at once (s)"
    )
    resolve_s: float = Field(30.0, ge=0, description="A firing pool or budget alert resolves after this long without (s)")
    stale_s: PositiveFloat = Field(
        60.0, description="An instance without a snapshot this long is gone: out of alerts, budget and advice (s)"
    )
    advice_window_s: PositiveFloat = Field(
        1800.0, description="Pool-size advice looks at the peak in-use and waits over this long (s)"
    )
    season_multipliers: Annotated[
        dict[Season, PositiveFloat], _over_defaults({"peak": 2.0, "proposal": 1.0, "off": 1.0})
    ] = Field(
        {"peak": 2.0, "proposal": 1.0, "off": 1.0},
        description="JSON object season -> factor the recommended pool size is multiplied by",
    )
    service_criticality: Annotated[dict[str, Criticality], BeforeValidator(_json)] = Field(
        {}, description='JSON {"service": "critical|high|medium"}; a service not named gets the criticality of the '
        "context its name starts with (booking-service: booking), else DBOPT_DEFAULT_CRITICALITY"
    )


class AlertRuleSettings(Group):
    """Error-rate and surge alerts on the closed windows, in `dbopt worker` (DBOPT_ALERT_*).

    Hysteresis is the latency detector's: DBOPT_DETECT_FIRE_AFTER and DBOPT_DETECT_RESOLVE_AFTER windows.
    """

    env_prefix: ClassVar[str] = "DBOPT_ALERT_"
    error_share_critical: float = Field(
        0.02, gt=0, le=1, description="Error share of a window of a critical context that is too high"
    )
    error_share: float = Field(0.05, gt=0, le=1, description="... of any other context")
    error_min_errors: int = Field(5, ge=1, description="Fewest failed statements in a window for an error alert")
    error_min_events: int = Field(20, ge=1, description="Fewest statements in a window for it to be judged")
    surge_factor: float = Field(
        4.0, gt=1, description="A service's events per window at least this times its baseline is a surge"
    )
    surge_min_events: int = Field(100, ge=1, description="Fewest events in a window for a surge")
    surge_baseline_windows: int = Field(
        30, ge=1, description="Windows the surge baseline (median events per window) is computed over"
    )
    surge_baseline_min_windows: int = Field(5, ge=1, description="Windows needed before surges are judged")


def _ui_users(value: SecretStr | None) -> SecretStr | None:
    if value is not None:  # only then: the slim distribution (the SDK) has no bcrypt
        from streams.serve.auth import parse_users  # the one parser of DBOPT_UI_USERS; imported late (a stage module)

        parse_users(value.get_secret_value())
    return value


class ServeSettings(Group):
    """The live page and HTTP API, `dbopt serve` (DBOPT_SERVE_*, DBOPT_UI_USERS); see docs/serve.md."""

    env_prefix: ClassVar[str] = "DBOPT_SERVE_"
    host: str = Field("127.0.0.1", min_length=1, description="Address `dbopt serve` listens on")
    port: int = Field(8080, ge=0, le=65535, description="Port of `dbopt serve` (0: any free port)")
    users: Annotated[SecretStr | None, Env("DBOPT_UI_USERS"), AfterValidator(_ui_users)] = Field(
        None, description="Comma list of name:role:bcrypt-hash (roles viewer, operator; hashes from "
        "`dbopt ui hash-password`) (secret); unset: dbopt serve refuses to start"
    )
    session_secret: SecretStr | None = Field(
        None, description="Key that signs the login session cookies (secret); unset: a random key per process "
        "(sessions end with it; replicas behind one address need the same key)"
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, description="A login session ends after this long (s)")
    cookie_secure: bool = Field(False, description="Send the session cookie only over HTTPS (set behind TLS)")
    retention_s: PositiveFloat = Field(
        6 * 3600.0, description="The view keeps the windows of this long per series (alerts and optimizations: "
        "the newest DBOPT_SERVE_MAX_RECORDS) (s)"
    )
    max_windows_per_key: int = Field(720, ge=1, description="Most windows kept per (service, fingerprint/context)")
    max_keys: int = Field(5000, ge=1, description="Most window series kept; the least recently updated go first")
    max_records: int = Field(
        5000, ge=1, description="Most alerts, and most optimizations, kept in the view (the oldest go first)"
    )
    warn_ratio: float = Field(
        0.8, gt=0, le=1, description="p95 at or above this fraction of the SLO shows amber (above the SLO: red)"
    )
    stale_s: PositiveFloat = Field(
        300.0, description="A series without a closed window for this long shows grey (no recent traffic) (s)"
    )
    history_refresh_s: PositiveFloat = Field(
        30.0, description="How often the executor's audit table is read again for history (s)"
    )
    consumer_group: str = Field(
        "dbopt-serve", min_length=1, description="Prefix of the consumer group of each dbopt serve process "
        "(+ host, pid and a random suffix: every process reads the topics from the beginning)"
    )
    poll_timeout_s: float = Field(0.25, ge=0.01, le=2.0, description="Longest wait for a record in one poll (s)")


def _readable_file(path: str) -> str:
    if not Path(path).is_file() or not os.access(path, os.R_OK):
        raise ValueError("is not a readable file")
    return path


ReadableFile = Annotated[str, AfterValidator(_readable_file)]
_Upper = BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v)


class KafkaSecurity(Group):
    """How every Kafka client reaches the brokers: TLS and SASL (DBOPT_KAFKA_*).

    Applied in one place per client library: ``streams.kafka.clients.connection_config``
    (confluent-kafka: the SDK, the stages' loop, admin) and ``streams.app.faust_app`` (Faust/aiokafka).
    """

    env_prefix: ClassVar[str] = "DBOPT_KAFKA_"
    security_protocol: Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], _Upper] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], _Upper] = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    sasl_username: str | None = Field(None, description="SASL user name (required with SASL_*)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret; required with SASL_*)")
    ssl_ca_file: ReadableFile | None = Field(
        None, description="PEM file of the CA(s) the brokers' certificates are checked against; unset: the system's"
    )
    ssl_cert_file: ReadableFile | None = Field(None, description="PEM client certificate (mutual TLS), with the key")
    ssl_key_file: ReadableFile | None = Field(None, description="PEM private key of the client certificate")
    ssl_key_password: SecretStr | None = Field(None, description="Password of an encrypted private key (secret)")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        protocol = f"DBOPT_KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
        if self.sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(f"{protocol} needs DBOPT_KAFKA_SASL_USERNAME and DBOPT_KAFKA_SASL_PASSWORD")
        if not self.sasl and (self.sasl_username or self.sasl_password is not None):
            raise ValueError(f"DBOPT_KAFKA_SASL_USERNAME/PASSWORD are set but {protocol} uses no SASL")
        files = (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file, self.ssl_key_password)
        if not self.tls and any(f is not None for f in files):
            raise ValueError(f"DBOPT_KAFKA_SSL_* are set but {protocol} uses no TLS (SSL or SASL_SSL)")
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("DBOPT_KAFKA_SSL_CERT_FILE and DBOPT_KAFKA_SSL_KEY_FILE go together (mutual TLS)")
        return self


class RegistryAuth(Group):
    """Credentials and TLS trust for the schema registry at DBOPT_SCHEMA_REGISTRY_URL (DBOPT_SCHEMA_REGISTRY_*)."""

    env_prefix: ClassVar[str] = "DBOPT_SCHEMA_REGISTRY_"
    username: str | None = Field(None, description="HTTP basic auth user (Confluent Cloud: the API key)")
    password: SecretStr | None = Field(None, description="HTTP basic auth password (secret; Confluent Cloud: the API secret)")
    ca_file: ReadableFile | None = Field(None, description="PEM CA file for an https:// registry; unset: the system's")

    @model_validator(mode="after")
    def _both(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("DBOPT_SCHEMA_REGISTRY_USERNAME and DBOPT_SCHEMA_REGISTRY_PASSWORD go together")
        return self


class Settings(Overridable, BaseSettings):
    """Every dbopt setting. Built from the environment by :func:`load_settings` only."""

    model_config = SettingsConfigDict(
        env_prefix="DBOPT_", frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False
    )

    kafka_bootstrap: Annotated[str, AfterValidator(_bootstrap)] = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, a comma-separated host:port list"
    )
    database_url: Annotated[SecretUrl, AfterValidator(_database_url)] = Field(
        SecretUrl("postgresql://dbopt:dbopt@127.0.0.1:15432/dbopt"),
        description="Target database, postgresql://user:password@host:port/database (secret: password masked)",
    )
    databases: Annotated[
        dict[str, Annotated[SecretUrl, AfterValidator(_database_url)]], BeforeValidator(_json)
    ] = Field(
        {}, description='Several target databases: JSON {"name": "postgresql://...", ...}; an event\'s, window\'s, '
        "alert's or command's database field selects one by name, any other name (or none) means "
        "DBOPT_DATABASE_URL; `dbopt executor --database NAME` serves one (secret: passwords masked)",
    )
    database_search_path: CommaList[Annotated[str, AfterValidator(_schema_name)]] = Field(
        ("public",),
        min_length=1,
        description="Comma list of schemas pinned as search_path on every dbopt connection: resolves unqualified "
        "table names in services' statements; the demo creates its tables in the first (see streams/db.py)",
    )
    schema_registry_url: HttpUrl | None = Field(
        None, description="Schema registry (Confluent wire format); unset: Avro single-object encoding"
    )
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity, description="Kafka TLS and SASL, for every client")
    schema_registry: RegistryAuth = Field(default_factory=RegistryAuth, description="Schema registry credentials")
    topics: Topics = Field(default_factory=Topics, description="Topic names")
    topic_policy: TopicPolicy = Field(default_factory=TopicPolicy, description="How topics are created")
    sdk_buffer_messages: int = Field(100_000, ge=1, description="Events the SDK producer buffers before dropping")
    sdk_linger_ms: int = Field(20, ge=0, description="How long the SDK producer waits to fill a batch (ms)")
    sdk_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd", description="Compression of the SDK producer's batches: none, gzip, snappy, lz4, zstd"
    )
    sdk_statement_cache: int = Field(4096, ge=1, description="Normalized statements cached by the SDK")
    sdk_mode: Literal["events", "sketch"] = Field(
        "events", description="events: one QueryEvent per execution; sketch: one StatementSketch per statement, "
        "context and flush interval (docs/sdk.md)"
    )
    sdk_flush_interval_ms: int = Field(
        10_000, ge=100, description="Sketch mode: interval a sketch covers, aligned to the epoch and cut at the "
        "worker's pane boundaries (ms)"
    )
    sdk_event_above_ms: float = Field(
        1_000.0, gt=0, description="Sketch mode: an execution at least this slow goes as its own QueryEvent "
        "(not into the sketch), as evidence for the advisor (ms)"
    )
    sdk_error_events: bool = Field(
        True, description="Sketch mode: a failed execution goes as its own QueryEvent with its SQLSTATE (true) "
        "or is counted in the sketch's errors (false)"
    )
    timezone: Annotated[str, AfterValidator(_known_zone)] = Field(
        "UTC", description="The platform's local time zone (IANA name), for seasons and freeze days"
    )
    freeze_weekdays: Annotated[CommaList[Weekday], BeforeValidator(_weekday_names)] = Field(
        ("sat",),
        description="Comma list of wedding days (mon..sun) when no automatic schema change runs; empty: none",
    )
    command_key: SecretStr | None = Field(
        None, description="HMAC key that signs and verifies executor commands (secret)"
    )
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Ingest limits")
    domain: DomainSettings = Field(default_factory=DomainSettings, description="Business contexts and SLOs")
    detect: DetectSettings = Field(default_factory=DetectSettings, description="Alert conditions")
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings, description="The executor")
    advise: AdviseSettings = Field(default_factory=AdviseSettings, description="The advisor")
    windows: WindowSettings = Field(default_factory=WindowSettings, description="Windows and the worker")
    notify: NotifySettings = Field(default_factory=NotifySettings, description="dbopt notify")
    ui_url: HttpUrl | None = Field(
        None, description="Base URL of the live page, linked from notifications; unset: no link"
    )
    otlp: OtlpSettings = Field(default_factory=OtlpSettings, description="The OpenTelemetry receiver")
    collect: CollectSettings = Field(default_factory=CollectSettings, description="dbopt collect")
    pools: PoolSettings = Field(default_factory=PoolSettings, description="Pool alerts, budget and advice")
    alert_rules: AlertRuleSettings = Field(default_factory=AlertRuleSettings, description="Error and surge alerts")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="dbopt serve: the live page and API")

    @model_validator(mode="after")
    def _own_schema_not_searched(self) -> Self:
        if self.executor.audit_schema in self.database_search_path:
            raise ValueError(
                f"DBOPT_DATABASE_SEARCH_PATH={','.join(self.database_search_path)!r} holds dbopt's own schema "
                f"(DBOPT_AUDIT_SCHEMA={self.executor.audit_schema!r})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the constructor's arguments: the environment comes in through load_settings()."""
        return (init_settings,)


def settings_database(settings: Settings, name: str | None) -> str | None:
    """The DBOPT_DATABASES entry a record's ``database`` field selects; None: the default database."""
    return name if name is not None and name in settings.databases else None


def database_url_of(settings: Settings, name: str | None) -> SecretStr:
    """The URL of the database a record's ``database`` field selects (DBOPT_DATABASE_URL by default)."""
    chosen = settings_database(settings, name)
    return settings.database_url if chosen is None else settings.databases[chosen]


# ---------------------------------------------------------------------------------------------
# variables: every setting's DBOPT_* name


@dataclass(frozen=True)
class Variable:
    """One setting's variable: its name, where the value lives in Settings, its declaration."""

    name: str
    path: tuple[str, ...]  # attribute path: ("executor", "lock_timeout_ms")
    owner: type[BaseModel]  # the class declaring the field: ExecutorSettings
    field: FieldInfo

    @property
    def secret(self) -> bool:
        return _holds_secret(self.field.annotation)

    @property
    def empty_is_a_value(self) -> bool:
        """An empty variable is an unset one, except for a comma list (then: the empty list)."""
        return any(getattr(m, "func", None) is _split_commas for m in self.field.metadata)


def _holds_secret(annotation: object) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return True
    return any(_holds_secret(arg) for arg in get_args(annotation))


def _variables(model: type[BaseModel], prefix: str, path: tuple[str, ...] = ()) -> dict[str, Variable]:
    found: dict[str, Variable] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Group):
            inner = _variables(annotation, annotation.env_prefix, (*path, name))
        else:
            env = next((m.name for m in field.metadata if isinstance(m, Env)), prefix + name.upper())
            inner = {env: Variable(env, (*path, name), model, field)}
        clash = found.keys() & inner.keys()
        if clash:
            raise TypeError(f"settings declare the variable(s) {sorted(clash)} twice")
        found.update(inner)
    return found


VARIABLES: dict[str, Variable] = _variables(Settings, Settings.model_config["env_prefix"])
_BY_FIELD: dict[tuple[type[BaseModel], str], Variable] = {(v.owner, v.path[-1]): v for v in VARIABLES.values()}


def _variable_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Variable | None:
    """The variable of an error location (``("executor", "lock_timeout_ms")``) inside ``model``."""
    for part in map(str, loc):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if isinstance(field.annotation, type) and issubclass(field.annotation, Group):
            model = field.annotation
            continue
        return _BY_FIELD.get((model, part))
    return None


def value_at(settings: Settings, variable: Variable) -> Any:
    value: Any = settings
    for part in variable.path:
        value = getattr(value, part)
    return value


class DboptEnvSource(PydanticBaseSettingsSource):
    """The settings found in a mapping of ``DBOPT_*`` variables, nested like :class:`Settings`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError("DboptEnvSource reads every variable at once, in __call__")

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, variable in VARIABLES.items():
            raw = self.environ.get(name)
            if raw is None or (raw == "" and not variable.empty_is_a_value):
                continue
            node = values
            for part in variable.path[:-1]:
                node = node.setdefault(part, {})
            node[variable.path[-1]] = raw
        return values


# ---------------------------------------------------------------------------------------------
# run directory and the environment


def _is_this_project(pyproject: Path) -> bool:
    try:
        return tomllib.loads(pyproject.read_text()).get("project", {}).get("name") == PROJECT_NAME
    except (OSError, tomllib.TOMLDecodeError):
        return False


def _in_site_packages(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def run_dir(cwd: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """Where dbopt keeps local state (``env``, the dev servers' data, demo logs, Faust stores).

    ``DBOPT_RUN_DIR`` if set; else the ``.run/`` of the current project: the first directory
    from ``cwd`` upwards that holds this project's ``pyproject.toml`` or already has a ``.run/``;
    else ``./.run``. Never inside an installed package (site-packages).
    """
    if environ.get("DBOPT_RUN_DIR"):
        return Path(environ["DBOPT_RUN_DIR"]).expanduser().absolute()
    start = (cwd or Path.cwd()).absolute()
    for directory in (start, *start.parents):
        if _in_site_packages(directory):
            continue
        if (directory / ".run").is_dir() or _is_this_project(directory / "pyproject.toml"):
            return directory / ".run"
    if _in_site_packages(start):
        raise ConfigError(f"no run directory for {start} (inside an installed package): set DBOPT_RUN_DIR")
    return start / ".run"


def env_file(cwd: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """The ``KEY=value`` file ``make up`` writes with the local servers' addresses."""
    return run_dir(cwd, environ) / "env"


def read_env_file(path: Path) -> dict[str, str]:
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


@dataclass(frozen=True)
class Environment:
    """The ``DBOPT_*`` variables settings are read from, and where each came from."""

    values: dict[str, str]
    origins: dict[str, str]  # name -> "environment" or the env file's path

    @classmethod
    def current(cls) -> "Environment":
        """The process environment over the run directory's env file."""
        path = env_file()
        from_file = {k: v for k, v in read_env_file(path).items() if k.startswith("DBOPT_")}
        from_process = {k: v for k, v in os.environ.items() if k.startswith("DBOPT_")}
        origins = {**dict.fromkeys(from_file, str(path)), **dict.fromkeys(from_process, "environment")}
        return cls({**from_file, **from_process}, origins)


def _check_names(env: Environment) -> None:
    known = [*VARIABLES, *OTHER_VARIABLES]
    for name in sorted(env.values):
        if name.startswith("DBOPT_") and name not in known:
            near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else "; `dbopt config` lists every setting"
            where = env.origins.get(name, "the environment")
            raise ConfigError(f"unknown variable {name} (in {where}){hint}")


def _describe(exc: ValidationError, model: type[BaseModel], env: Mapping[str, str]) -> str:
    """The problems, each naming its variable; never a secret's value."""
    lines: dict[str, str] = {}  # the first problem of each variable
    for error in exc.errors(include_url=False):
        variable = _variable_at(model, error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if variable is None:
            lines.setdefault(message, message)
        elif variable.secret:
            lines.setdefault(variable.name, f"{variable.name}: {message}")
        else:
            shown = env.get(variable.name, error["input"])
            lines.setdefault(variable.name, f"{variable.name}={shown!r}: {message}")
    return "; ".join(lines.values())


def _validated(model: type[BaseModel], build: Callable[[], S], env: Mapping[str, str] | None = None) -> S:
    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, env or {})) from None


def load_settings(env: Mapping[str, str] | Environment | None = None) -> Settings:
    """Settings from ``env`` (default: :meth:`Environment.current`, the process environment over
    ``.run/env``); a plain mapping is all there is (nothing else is read).

    Raises :class:`ConfigError` naming the variable for an unknown ``DBOPT_*`` name or a bad value.
    """
    if env is None:
        environment = Environment.current()
    else:
        environment = env if isinstance(env, Environment) else Environment(dict(env), {})
    _check_names(environment)
    source = DboptEnvSource(Settings, environment.values)
    return _validated(Settings, lambda: Settings(**source()), environment.values)
