"""Every confluent-kafka client dbopt makes comes from here, so connection settings
(bootstrap servers, and later TLS/SASL) are written once.

``producer`` is idempotent with ``acks=all``: a record the broker acknowledged is durable, and a
retried send never duplicates it. ``consumer`` never auto-commits: stages commit through the
shared loop (:mod:`streams.kafka.loop`) only after what they produced is acknowledged.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.config import Settings

# librdkafka's own lines ("connection refused" ...) go to Python logging, not straight to stderr,
# so they follow the command's --log-level/--log-format (delivered when the client polls)
LIBRDKAFKA_LOG = logging.getLogger("streams.kafka.librdkafka")


def connection_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka properties that say where the cluster is and how to reach it (and where
    librdkafka logs)."""
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": LIBRDKAFKA_LOG}


def producer(settings: Settings, **overrides: Any) -> Producer:
    config: dict[str, Any] = {
        **connection_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    }
    config.update({k.replace("_", "."): v for k, v in overrides.items()})
    return Producer(config)


def consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    config: dict[str, Any] = {
        **connection_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    config.update({k.replace("_", "."): v for k, v in overrides.items()})
    return Consumer(config)


def admin(settings: Settings, **overrides: Any) -> AdminClient:
    config: dict[str, Any] = {**connection_config(settings), "socket.timeout.ms": 10_000}
    config.update({k.replace("_", "."): v for k, v in overrides.items()})
    return AdminClient(config)
