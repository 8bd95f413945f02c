"""All of dbopt's configuration, in one typed place, read from ``DBOPT_*`` variables.

Every command reads its settings through :func:`load_settings`. ``make up`` writes
``.run/env`` with the broker and database addresses; when those variables are not in
the environment, the file is read as a fallback so that a plain ``dbopt ...`` works
right after ``make up``.
"""

from __future__ import annotations

import json
import math
import os
import re
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


CRITICALITIES = ("critical", "high", "medium")  # most critical first
SEASONS = ("peak", "proposal", "off")


@dataclass(frozen=True)
class ContextRule:
    """Queries touching one of ``tables`` belong to ``context``, which has ``criticality``."""

    context: str
    criticality: str
    tables: tuple[str, ...]


DEFAULT_CONTEXT_RULES: tuple[ContextRule, ...] = (
    ContextRule("booking", "critical", ("bookings", "reservations", "availability")),
    ContextRule("payment", "critical", ("payments", "invoices", "transactions")),
    ContextRule("vendor_search", "high", ("vendors", "suppliers", "services")),
    ContextRule("timeline", "high", ("timeline", "schedule", "events", "timeline_events")),
    ContextRule("guest_management", "medium", ("guests", "invitations", "rsvp")),
)


def _default_slo() -> dict[str, float]:
    return {"booking": 50.0, "vendor_search": 100.0, "payment": 20.0, "timeline": 30.0}


@dataclass(frozen=True)
class DomainSettings:
    """Business contexts and their p95 SLOs (DBOPT_CONTEXT_RULES, DBOPT_SLO_P95_MS, ...)."""

    context_rules: tuple[ContextRule, ...] = DEFAULT_CONTEXT_RULES
    default_context: str = "other"
    default_criticality: str = "medium"
    slo_p95_ms: Mapping[str, float] = field(default_factory=_default_slo)
    default_slo_p95_ms: float = 200.0
    # SLO threshold = base SLO x multiplier of the season the window falls in
    season_slo_multipliers: Mapping[str, float] = field(
        default_factory=lambda: {season: 1.0 for season in SEASONS}
    )


@dataclass(frozen=True)
class IngestSettings:
    """Limits the ingest stage enforces on every QueryEvent (DBOPT_INGEST_*)."""

    max_age_ms: int = 3600 * 1000
    max_future_skew_ms: int = 5 * 60 * 1000
    max_query_text: int = 16_384
    max_tables: int = 64
    max_string: int = 256
    max_fingerprints_per_service: int = 1000
    statement_types: tuple[str, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UTILITY")
    statement_cache: int = 4096


@dataclass(frozen=True)
class DetectSettings:
    """Alert conditions and their hysteresis (DBOPT_DETECT_*)."""

    window_kinds: tuple[str, ...] = ("tumbling",)
    min_samples: int = 20
    fire_after: int = 2
    resolve_after: int = 2
    regression_factor: float = 3.0
    regression_floor_ms: float = 10.0
    baseline_windows: int = 10
    baseline_min_windows: int = 3


@dataclass(frozen=True)
class ExecutorSettings:
    """How `dbopt executor` applies commands (DBOPT_EXECUTOR_*, DBOPT_AGGRESSIVENESS, ...)."""

    # conservative | moderate | aggressive: which automatic actions apply (see docs/executor.md)
    aggressiveness: str = "moderate"
    max_indexes_per_table: int = 10
    lock_timeout_ms: int = 5_000
    statement_timeout_ms: int = 3_600_000
    executor_id: str = ""  # "" -> host:pid
    audit_schema: str = "dbopt"
    consumer_group: str = "dbopt-executor"
    poll_timeout_s: float = 1.0
    # PostgreSQL unavailable: wait between reconnect attempts, doubling up to this cap
    db_retry_max_s: float = 30.0
    # deferred commands in the audit table are re-examined this often
    deferred_recheck_s: float = 60.0
    # session advisory lock key held while an executor works: two never act at once
    advisory_lock_key: int = 0x6462_6F70_7465_7865  # "dboptexe"


AGGRESSIVENESS_LEVELS = ("conservative", "moderate", "aggressive")


@dataclass(frozen=True)
class AdviseSettings:
    """How `dbopt advisor` / `dbopt analyze` choose indexes and verify them (DBOPT_ADVISE_*)."""

    # planner cost (generic plan) below which a query is not worth an index
    min_cost: float = 1000.0
    # a candidate must cut the query's plan cost by at least this fraction
    min_improvement: float = 0.5
    max_index_columns: int = 4
    # estimated planner cost of maintaining one index per written row, weighed against read savings
    index_write_cost: float = 10.0
    # statistics are stale when rows modified since ANALYZE exceed this fraction of live rows
    stale_ratio: float = 0.1
    stale_min_rows: int = 1000
    statement_timeout_ms: int = 5_000
    # verification: windows after the index to judge, p95 gain needed to keep it,
    # and how much the table's write p95 may grow (relative and absolute) before a rollback
    verify_windows: int = 3
    verify_min_gain: float = 0.2
    write_tolerance: float = 0.5
    write_floor_ms: float = 1.0
    # give up waiting for after-windows this long after the index was applied (keep, no traffic)
    verify_timeout_s: float = 900.0
    # closed windows remembered per fingerprint, for write rates and "before" figures
    history_windows: int = 30
    consumer_group: str = "dbopt-advisor"
    poll_timeout_s: float = 0.5


@dataclass(frozen=True)
class WindowSettings:
    """Event-time windows and the Faust worker that computes them (DBOPT_WINDOW_*, DBOPT_WORKER_*).

    Tumbling and hopping windows are aligned to the epoch; ``hopping_ms`` must be a multiple of
    ``hop_ms``. A window [s, e) closes once a partition's watermark reaches e + ``grace_ms``. A
    partition that is caught up and has seen no event for ``idle_timeout_ms`` has its watermark
    moved to (wall clock - ``idle_timeout_ms``) by the worker's tick, so its windows still close.
    """

    tumbling_ms: int = 60_000
    hop_ms: int = 60_000
    hopping_ms: int = 300_000
    grace_ms: int = 10_000
    idle_timeout_ms: int = 15_000
    tick_interval_ms: int = 5_000
    app_id: str = "dbopt-worker"
    store: str = "rocksdb://"
    # None: RUN_DIR/faust/<app_id>-<web_port>, one directory per worker process on a host
    data_dir: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    batch_max: int = 2000
    batch_within_ms: int = 200


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://dbopt:dbopt@127.0.0.1:15432/dbopt"
    # DBOPT_DATABASE_SEARCH_PATH: pinned on every dbopt connection; resolves unqualified table names
    # in services' statements; the demo creates its tables in the first schema (see streams/db.py)
    database_search_path: tuple[str, ...] = ("public",)
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
    # ingest, business domain, detector
    ingest: IngestSettings = field(default_factory=IngestSettings)
    domain: DomainSettings = field(default_factory=DomainSettings)
    detect: DetectSettings = field(default_factory=DetectSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    advise: AdviseSettings = field(default_factory=AdviseSettings)
    windows: WindowSettings = field(default_factory=WindowSettings)

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


def _search_path(env: Mapping[str, str], default: tuple[str, ...], audit_schema: str) -> tuple[str, ...]:
    raw = env.get("DBOPT_DATABASE_SEARCH_PATH")
    if raw is None or raw.strip() == "":
        return default
    path = tuple(s.strip() for s in raw.split(","))
    for schema in path:
        if not re.fullmatch(r"[a-z_][a-z0-9_$]{0,62}", schema) or schema.startswith("pg_"):
            raise ConfigError(
                f"DBOPT_DATABASE_SEARCH_PATH={raw!r}: {schema!r} is not a plain lowercase schema name"
            )
    if audit_schema in path:
        raise ConfigError(f"DBOPT_DATABASE_SEARCH_PATH={raw!r} holds dbopt's own schema (DBOPT_AUDIT_SCHEMA)")
    return path


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={value} must be a finite number of at least {minimum}")
    return value


def _json_object(env: Mapping[str, str], name: str) -> dict[str, object] | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _positive_numbers(env: Mapping[str, str], name: str, defaults: Mapping[str, float]) -> dict[str, float]:
    """``defaults`` updated from a JSON object of positive numbers in ``name``."""
    merged = dict(defaults)
    for key, value in (_json_object(env, name) or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name}: {key!r} must be a positive number, got {value!r}")
        merged[key] = float(value)
    return merged


def _context_rules(env: Mapping[str, str]) -> tuple[ContextRule, ...]:
    """DBOPT_CONTEXT_RULES: ``{"booking": {"criticality": "critical", "tables": ["bookings"]}, ...}``.

    Replaces the default rules; object order is the tie-break between equally critical contexts.
    """
    name = "DBOPT_CONTEXT_RULES"
    spec = _json_object(env, name)
    if spec is None:
        return DEFAULT_CONTEXT_RULES
    rules = []
    for context, rule in spec.items():
        if not isinstance(rule, dict) or set(rule) != {"criticality", "tables"}:
            raise ConfigError(f"{name}: {context!r} needs exactly the keys 'criticality' and 'tables'")
        if rule["criticality"] not in CRITICALITIES:
            raise ConfigError(f"{name}: {context!r} criticality must be one of {CRITICALITIES}")
        tables = rule["tables"]
        if not isinstance(tables, list) or not all(isinstance(t, str) and t for t in tables):
            raise ConfigError(f"{name}: {context!r} tables must be a list of table names")
        rules.append(ContextRule(context, rule["criticality"], tuple(t.lower() for t in tables)))
    return tuple(rules)


def _domain(env: Mapping[str, str]) -> DomainSettings:
    base = DomainSettings()
    criticality = env.get("DBOPT_DEFAULT_CRITICALITY", base.default_criticality)
    if criticality not in CRITICALITIES:
        raise ConfigError(f"DBOPT_DEFAULT_CRITICALITY={criticality!r} must be one of {CRITICALITIES}")
    multipliers = _positive_numbers(env, "DBOPT_SEASON_SLO_MULTIPLIERS", base.season_slo_multipliers)
    unknown = set(multipliers) - set(SEASONS)
    if unknown:
        raise ConfigError(f"DBOPT_SEASON_SLO_MULTIPLIERS has unknown season(s) {sorted(unknown)}; use {SEASONS}")
    return DomainSettings(
        context_rules=_context_rules(env),
        default_context=env.get("DBOPT_DEFAULT_CONTEXT", base.default_context),
        default_criticality=criticality,
        slo_p95_ms=_positive_numbers(env, "DBOPT_SLO_P95_MS", base.slo_p95_ms),
        default_slo_p95_ms=_float(env, "DBOPT_SLO_DEFAULT_P95_MS", base.default_slo_p95_ms, 0.001),
        season_slo_multipliers=multipliers,
    )


def _ingest(env: Mapping[str, str]) -> IngestSettings:
    base = IngestSettings()
    types = env.get("DBOPT_INGEST_STATEMENT_TYPES")
    return IngestSettings(
        max_age_ms=_int(env, "DBOPT_INGEST_MAX_AGE_MS", base.max_age_ms, 1),
        max_future_skew_ms=_int(env, "DBOPT_INGEST_MAX_FUTURE_SKEW_MS", base.max_future_skew_ms, 0),
        max_query_text=_int(env, "DBOPT_INGEST_MAX_QUERY_TEXT", base.max_query_text, 1),
        max_tables=_int(env, "DBOPT_INGEST_MAX_TABLES", base.max_tables, 1),
        max_string=_int(env, "DBOPT_INGEST_MAX_STRING", base.max_string, 1),
        max_fingerprints_per_service=_int(
            env, "DBOPT_INGEST_MAX_FINGERPRINTS_PER_SERVICE", base.max_fingerprints_per_service, 1
        ),
        statement_types=base.statement_types
        if types is None
        else tuple(t.strip().upper() for t in types.split(",") if t.strip()),
        statement_cache=_int(env, "DBOPT_INGEST_STATEMENT_CACHE", base.statement_cache, 1),
    )


def _detect(env: Mapping[str, str]) -> DetectSettings:
    base = DetectSettings()
    kinds = env.get("DBOPT_DETECT_WINDOW_KINDS")
    window_kinds = base.window_kinds if kinds is None else tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not window_kinds or set(window_kinds) - {"tumbling", "hopping"}:
        raise ConfigError(f"DBOPT_DETECT_WINDOW_KINDS={kinds!r}: use tumbling and/or hopping")
    return DetectSettings(
        window_kinds=window_kinds,
        min_samples=_int(env, "DBOPT_DETECT_MIN_SAMPLES", base.min_samples, 1),
        fire_after=_int(env, "DBOPT_DETECT_FIRE_AFTER", base.fire_after, 1),
        resolve_after=_int(env, "DBOPT_DETECT_RESOLVE_AFTER", base.resolve_after, 1),
        regression_factor=_float(env, "DBOPT_DETECT_REGRESSION_FACTOR", base.regression_factor, 1.0),
        regression_floor_ms=_float(env, "DBOPT_DETECT_REGRESSION_FLOOR_MS", base.regression_floor_ms),
        baseline_windows=_int(env, "DBOPT_DETECT_BASELINE_WINDOWS", base.baseline_windows, 1),
        baseline_min_windows=_int(env, "DBOPT_DETECT_BASELINE_MIN_WINDOWS", base.baseline_min_windows, 1),
    )


def _executor(env: Mapping[str, str]) -> ExecutorSettings:
    base = ExecutorSettings()
    level = env.get("DBOPT_AGGRESSIVENESS", base.aggressiveness).strip().lower()
    if level not in AGGRESSIVENESS_LEVELS:
        raise ConfigError(f"DBOPT_AGGRESSIVENESS={level!r}: use one of {', '.join(AGGRESSIVENESS_LEVELS)}")
    return ExecutorSettings(
        aggressiveness=level,
        max_indexes_per_table=_int(env, "DBOPT_MAX_INDEXES_PER_TABLE", base.max_indexes_per_table, 1),
        lock_timeout_ms=_int(env, "DBOPT_EXECUTOR_LOCK_TIMEOUT_MS", base.lock_timeout_ms, 1),
        statement_timeout_ms=_int(env, "DBOPT_EXECUTOR_STATEMENT_TIMEOUT_MS", base.statement_timeout_ms, 1),
        executor_id=env.get("DBOPT_EXECUTOR_ID", base.executor_id),
        audit_schema=env.get("DBOPT_AUDIT_SCHEMA", base.audit_schema),
        consumer_group=env.get("DBOPT_EXECUTOR_GROUP", base.consumer_group),
        poll_timeout_s=_float(env, "DBOPT_EXECUTOR_POLL_TIMEOUT_S", base.poll_timeout_s, 0.01),
        db_retry_max_s=_float(env, "DBOPT_EXECUTOR_DB_RETRY_MAX_S", base.db_retry_max_s, 0.1),
        deferred_recheck_s=_float(env, "DBOPT_EXECUTOR_DEFERRED_RECHECK_S", base.deferred_recheck_s, 0.1),
        advisory_lock_key=_int(env, "DBOPT_EXECUTOR_LOCK_KEY", base.advisory_lock_key, 0),
    )


def _windows(env: Mapping[str, str]) -> WindowSettings:
    base = WindowSettings()
    hop = _int(env, "DBOPT_WINDOW_HOP_MS", base.hop_ms, 1)
    hopping = _int(env, "DBOPT_WINDOW_HOPPING_MS", base.hopping_ms, 1)
    if hopping % hop:
        raise ConfigError(f"DBOPT_WINDOW_HOPPING_MS={hopping} must be a multiple of DBOPT_WINDOW_HOP_MS={hop}")
    store = env.get("DBOPT_WORKER_STORE", base.store)
    if store not in ("rocksdb://", "memory://"):
        raise ConfigError(f"DBOPT_WORKER_STORE={store!r}: use rocksdb:// or memory://")
    return WindowSettings(
        tumbling_ms=_int(env, "DBOPT_WINDOW_TUMBLING_MS", base.tumbling_ms, 1),
        hop_ms=hop,
        hopping_ms=hopping,
        grace_ms=_int(env, "DBOPT_WINDOW_GRACE_MS", base.grace_ms, 0),
        idle_timeout_ms=_int(env, "DBOPT_WINDOW_IDLE_TIMEOUT_MS", base.idle_timeout_ms, 0),
        tick_interval_ms=_int(env, "DBOPT_WORKER_TICK_INTERVAL_MS", base.tick_interval_ms, 10),
        app_id=env.get("DBOPT_WORKER_APP_ID", base.app_id),
        store=store,
        data_dir=env.get("DBOPT_WORKER_DATA_DIR") or None,
        web_host=env.get("DBOPT_WORKER_WEB_HOST", base.web_host),
        web_port=_int(env, "DBOPT_WORKER_WEB_PORT", base.web_port, 1),
        batch_max=_int(env, "DBOPT_WORKER_BATCH_MAX", base.batch_max, 1),
        batch_within_ms=_int(env, "DBOPT_WORKER_BATCH_WITHIN_MS", base.batch_within_ms, 1),
    )


def _advise(env: Mapping[str, str]) -> AdviseSettings:
    base = AdviseSettings()
    improvement = _float(env, "DBOPT_ADVISE_MIN_IMPROVEMENT", base.min_improvement)
    if not 0 < improvement < 1:
        raise ConfigError(f"DBOPT_ADVISE_MIN_IMPROVEMENT={improvement} must be between 0 and 1 (a fraction)")
    return AdviseSettings(
        min_cost=_float(env, "DBOPT_ADVISE_MIN_COST", base.min_cost),
        min_improvement=improvement,
        max_index_columns=_int(env, "DBOPT_ADVISE_MAX_INDEX_COLUMNS", base.max_index_columns, 1),
        index_write_cost=_float(env, "DBOPT_ADVISE_INDEX_WRITE_COST", base.index_write_cost),
        stale_ratio=_float(env, "DBOPT_ADVISE_STALE_RATIO", base.stale_ratio),
        stale_min_rows=_int(env, "DBOPT_ADVISE_STALE_MIN_ROWS", base.stale_min_rows),
        statement_timeout_ms=_int(env, "DBOPT_ADVISE_STATEMENT_TIMEOUT_MS", base.statement_timeout_ms, 1),
        verify_windows=_int(env, "DBOPT_ADVISE_VERIFY_WINDOWS", base.verify_windows, 1),
        verify_min_gain=_float(env, "DBOPT_ADVISE_VERIFY_MIN_GAIN", base.verify_min_gain),
        write_tolerance=_float(env, "DBOPT_ADVISE_WRITE_TOLERANCE", base.write_tolerance),
        write_floor_ms=_float(env, "DBOPT_ADVISE_WRITE_FLOOR_MS", base.write_floor_ms),
        verify_timeout_s=_float(env, "DBOPT_ADVISE_VERIFY_TIMEOUT_S", base.verify_timeout_s, 1.0),
        history_windows=_int(env, "DBOPT_ADVISE_HISTORY_WINDOWS", base.history_windows, 2),
        consumer_group=env.get("DBOPT_ADVISOR_GROUP", base.consumer_group),
        poll_timeout_s=_float(env, "DBOPT_ADVISE_POLL_TIMEOUT_S", base.poll_timeout_s, 0.01),
    )


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
        database_search_path=_search_path(env, base.database_search_path, env.get("DBOPT_AUDIT_SCHEMA", ExecutorSettings.audit_schema)),
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
        ingest=_ingest(env),
        domain=_domain(env),
        detect=_detect(env),
        executor=_executor(env),
        advise=_advise(env),
        windows=_windows(env),
    )
