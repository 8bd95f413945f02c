"""The Faust app of ``dbopt worker``, built from :class:`streams.config.Settings` only."""

from __future__ import annotations

import socket
from pathlib import Path

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from streams.app.web import install_web_surface
from streams.config import ConfigError, Settings, run_dir
from streams.detect.agent import register as register_detector
from streams.detect.traffic_agent import register as register_traffic
from streams.kafka import clients
from streams.kafka.topics import ensure_topics
from streams.pools.agent import pools_topic_name, register as register_pools
from streams.windows.agent import WindowsProcessor, ticks_topic_name

TICKS_RETENTION_MS = 3600 * 1000


def data_dir(settings: Settings) -> Path:
    """One RocksDB directory per worker process on a host (two workers never share files)."""
    windows = settings.windows
    if windows.data_dir:
        return Path(windows.data_dir)
    return run_dir() / "faust" / f"{windows.app_id}-{socket.gethostname()}-{windows.web_port}"


def _ensure_copartitioned(settings: Settings, name: str, partitions: int, config: dict[str, str]) -> None:
    """Create topic ``name`` with ``partitions`` partitions, or check an existing one has them.

    Faust needs its internal topics to have exactly the partition count of their source; a
    topic it finds with another count crashes the agent (PartitionsMismatch). Creating them
    up front also avoids a broker auto-creating one with the default single partition.
    """
    admin = clients.admin(settings)
    meta = admin.list_topics(timeout=30).topics
    if name in meta:
        found = len(meta[name].partitions)
        if found != partitions:
            raise ConfigError(
                f"topic {name} has {found} partitions but its source has {partitions}; delete it "
                "(the worker rebuilds ticks; a changelog's state is lost) or use another DBOPT_WORKER_APP_ID"
            )
        return
    new = NewTopic(name, num_partitions=partitions, replication_factor=settings.topic_policy.replication, config=config)
    try:
        admin.create_topics([new])[name].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def prepare_topics(settings: Settings) -> int:
    """Create missing dbopt topics and the ticks topic; return the events partition count."""
    ensure_topics(settings)
    meta = clients.admin(settings).list_topics(timeout=30).topics
    partitions = len(meta[settings.topics.query_events].partitions)
    _ensure_copartitioned(settings, ticks_topic_name(settings), partitions, {"retention.ms": str(TICKS_RETENTION_MS)})
    # the detector's table is fed by the windows topic: it must be co-partitioned too
    _ensure_copartitioned(settings, settings.topics.latency_windows, partitions, {})
    # every pool and server snapshot, forwarded under one key: the pool monitor's table is fed by it
    _ensure_copartitioned(settings, pools_topic_name(settings), partitions, {"retention.ms": str(TICKS_RETENTION_MS)})
    return partitions


def prepare_changelogs(app: faust.App, settings: Settings, partitions: int) -> None:
    """Create every table's changelog topic (compacted, co-partitioned) before Faust starts."""
    for table in app.tables.values():
        _ensure_copartitioned(
            settings, table.changelog_topic.get_topic_name(), partitions, {"cleanup.policy": "compact"}
        )


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's (aiokafka's) view of ``DBOPT_KAFKA_*``: the same TLS context and SASL login the
    confluent-kafka clients get from :func:`streams.kafka.clients.connection_config`."""
    security = settings.kafka
    context = clients.ssl_context(settings)
    if security.sasl:
        assert security.sasl_password is not None  # checked by KafkaSecurity
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=security.sasl_mechanism,
        )
    return faust.SSLCredentials(context) if context is not None else None


def create_app(settings: Settings, partitions: int) -> faust.App:
    """The app: the windows agent and its tick timer, the detector, and the web surface
    (``/metrics``, ``/healthz``, ``/readyz`` on ``DBOPT_WORKER_WEB_HOST`` only)."""
    windows = settings.windows
    app = faust.App(
        windows.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=windows.store,
        datadir=str(data_dir(settings)),
        web_host=windows.web_host,
        web_bind=windows.web_host,
        web_port=windows.web_port,
        topic_partitions=partitions,
        topic_replication_factor=settings.topic_policy.replication,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        autodiscover=False,
    )
    processor = WindowsProcessor(app, settings, partitions)
    app.agent(processor.source, name="windows", concurrency=1)(processor.run)
    app.timer(windows.tick_interval_ms / 1000, name="windows-ticks")(processor.send_ticks)
    register_detector(app, settings)
    register_traffic(app, settings)
    register_pools(app, settings)
    install_web_surface(app)
    return app
