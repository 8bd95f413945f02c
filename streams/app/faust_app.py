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
from streams.kafka.health import Health
from streams.kafka.topics import ensure_topics
from streams.pools.agent import pools_topic_name, register as register_pools
from streams.windows.agent import CHANGELOG_CONFIG, changelog_topic_name

FORWARD_RETENTION_MS = 3600 * 1000  # the internal topic the pool snapshots are forwarded to
STREAM_BUFFER = 512  # unprocessed records an agent's stream may hold (Faust's default: 4,096)


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
                "(a changelog's state is lost with it) or use another DBOPT_WORKER_APP_ID"
            )
        return
    new = NewTopic(name, num_partitions=partitions, replication_factor=settings.topic_policy.replication, config=config)
    try:
        admin.create_topics([new])[name].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def prepare_topics(settings: Settings) -> int:
    """Create missing dbopt topics and the worker's internal ones; return the events partition count."""
    ensure_topics(settings)
    meta = clients.admin(settings).list_topics(timeout=30).topics
    partitions = len(meta[settings.topics.query_events].partitions)
    # the windows stage reads the sketches beside the events (range-assigned: same partition numbers)
    # and keeps its state in a compacted changelog, one partition per events partition
    _ensure_copartitioned(settings, settings.topics.statement_sketches, partitions, {})
    _ensure_copartitioned(settings, changelog_topic_name(settings), partitions, CHANGELOG_CONFIG)
    # the detector's table is fed by the windows topic: it must be co-partitioned too
    _ensure_copartitioned(settings, settings.topics.latency_windows, partitions, {})
    # every pool and server snapshot, forwarded under one key: the pool monitor's table is fed by it
    _ensure_copartitioned(settings, pools_topic_name(settings), partitions, {"retention.ms": str(FORWARD_RETENTION_MS)})
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


def agents_app_id(worker_app_id: str) -> str:
    """The Faust app's id (its consumer group and changelog prefix): the windows stage's consumer
    group is ``DBOPT_WORKER_APP_ID`` itself, and a group cannot mix Faust's and librdkafka's assignors."""
    return f"{worker_app_id}-agents"


def create_app(settings: Settings, partitions: int, windows_health: Health | None = None) -> faust.App:
    """The app: the detector, the error/surge and pool agents, and the web surface (``/metrics``,
    ``/healthz``, ``/readyz`` on ``DBOPT_WORKER_WEB_HOST`` only, which also answer for the windows
    stage, :mod:`streams.windows.agent`, that runs beside the app in the same process)."""
    windows = settings.windows
    app = faust.App(
        agents_app_id(settings.windows.app_id),
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
        # prefetch bounded: Faust's defaults (4,096 unprocessed events per stream, 1 MB per partition
        # fetch) hold tens of MB of WindowStats messages when the windows stage emits a large close
        stream_buffer_maxsize=STREAM_BUFFER,
        broker_max_poll_records=STREAM_BUFFER,
        consumer_max_fetch_size=256 * 1024,
    )
    register_detector(app, settings)
    register_traffic(app, settings)
    register_pools(app, settings)
    install_web_surface(app, () if windows_health is None else (windows_health,))
    return app
