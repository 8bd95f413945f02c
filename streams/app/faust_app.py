"""The Faust app of ``dbopt worker``, built from :class:`streams.config.Settings` only."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from streams.config import RUN_DIR, ConfigError, Settings
from streams.kafka.topics import admin_client, ensure_topics
from streams.app.windows_agent import WindowsProcessor, ticks_topic_name

TICKS_RETENTION_MS = 3600 * 1000


def data_dir(settings: Settings) -> Path:
    """One RocksDB directory per worker process on a host (two workers never share files)."""
    windows = settings.windows
    if windows.data_dir:
        return Path(windows.data_dir)
    return RUN_DIR / "faust" / f"{windows.app_id}-{socket.gethostname()}-{windows.web_port}"


def prepare_topics(settings: Settings) -> int:
    """Create missing dbopt topics and the ticks topic; return the events partition count."""
    ensure_topics(settings)
    admin = admin_client(settings)
    events = settings.topics.query_events
    meta = admin.list_topics(timeout=30).topics
    partitions = len(meta[events].partitions)
    ticks = ticks_topic_name(settings)
    if ticks in meta:
        if len(meta[ticks].partitions) != partitions:
            raise ConfigError(
                f"topic {ticks} has {len(meta[ticks].partitions)} partitions but {events} has {partitions}; "
                "delete the ticks topic (it holds nothing durable) or use another DBOPT_WORKER_APP_ID"
            )
        return partitions
    new = NewTopic(
        ticks,
        num_partitions=partitions,
        replication_factor=settings.topic_policy.replication,
        config={"retention.ms": str(TICKS_RETENTION_MS)},
    )
    try:
        admin.create_topics([new])[ticks].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    return partitions


def create_app(settings: Settings, partitions: int) -> faust.App:
    """The app: the windows agent and its tick timer, the detector when built, ``/metrics``."""
    windows = settings.windows
    app = faust.App(
        windows.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
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
    if importlib.util.find_spec("streams.detect.agent") is not None:
        from streams.detect.agent import register

        register(app, settings)
    from streams.observe.metrics import install_metrics_route

    install_metrics_route(app)
    return app
