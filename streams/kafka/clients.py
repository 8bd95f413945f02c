"""Every confluent-kafka client dbopt makes comes from here, so connection settings
(bootstrap servers, TLS and SASL from ``DBOPT_KAFKA_*``) are written once: :func:`connection_config`.
Faust's clients get the same settings from :func:`ssl_context` (``streams.app.faust_app``).

``producer`` is idempotent with ``acks=all``: a record the broker acknowledged is durable, and a
retried send never duplicates it. ``consumer`` never auto-commits: stages commit through the
shared loop (:mod:`streams.kafka.loop`) only after what they produced is acknowledged.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any, Callable

from confluent_kafka import Consumer, ConsumerGroupState, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streams.config import Settings

LIBRDKAFKA_LOG = logging.getLogger("streams.kafka.librdkafka")


class _LibrdkafkaLog(logging.Logger):
    """Where librdkafka's own lines ("connection refused" ...) go: Python logging at DEBUG, each
    distinct line at most once a minute. librdkafka repeats them on every retry, and what a user
    must act on is logged once, in words that name the setting, by :func:`_tell_once`."""

    def __init__(self) -> None:
        super().__init__("streams.kafka.librdkafka")
        self._last: dict[str, float] = {}

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:  # noqa: ARG002
        text = str(msg) % args if args else str(msg)
        now = time.monotonic()
        if now - self._last.get(text, -60.0) >= 60.0:
            if len(self._last) > 1000:
                self._last.clear()
            self._last[text] = now
            LIBRDKAFKA_LOG.debug("%s", text)


_LIBRDKAFKA_SINK = _LibrdkafkaLog()


def connection_config(settings: Settings) -> dict[str, Any]:
    """The librdkafka properties that say where the cluster is and how to reach it: bootstrap
    servers, TLS (CA, client certificate) and SASL (``DBOPT_KAFKA_*``), and where librdkafka logs."""
    security = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": _LIBRDKAFKA_SINK,
        "error_cb": _tell_once(settings),
        "security.protocol": security.security_protocol,
    }
    if security.sasl:
        assert security.sasl_password is not None  # checked by KafkaSecurity
        config |= {
            "sasl.mechanism": security.sasl_mechanism,
            "sasl.username": security.sasl_username,
            "sasl.password": security.sasl_password.get_secret_value(),
        }
    tls = {
        "ssl.ca.location": security.ssl_ca_file,
        "ssl.certificate.location": security.ssl_cert_file,
        "ssl.key.location": security.ssl_key_file,
        "ssl.key.password": security.ssl_key_password.get_secret_value() if security.ssl_key_password else None,
    }
    return config | {key: value for key, value in tls.items() if value is not None}


def connection_problem(settings: Settings, error: KafkaError) -> str | None:
    """What a client error says about ``DBOPT_KAFKA_*`` in words that name the setting to fix:
    a refused SASL login or a failed TLS handshake; None for anything else (a broker that is down)."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    if error.code() == KafkaError._AUTHENTICATION:
        security = settings.kafka
        return (f"{where} refused the {security.sasl_mechanism} login of user {security.sasl_username!r}: check "
                f"DBOPT_KAFKA_SASL_USERNAME and DBOPT_KAFKA_SASL_PASSWORD ({error.str()})")
    if error.code() == KafkaError._SSL:
        return (f"TLS with {where} failed: check DBOPT_KAFKA_SSL_CA_FILE (the CA that signed the brokers' "
                f"certificates) and DBOPT_KAFKA_SSL_CERT_FILE/KEY_FILE ({error.str()})")
    return None


def _tell_once(settings: Settings) -> Callable[[KafkaError], None]:
    """librdkafka's error callback: a settings problem is logged once per client, naming the setting
    (librdkafka itself retries and logs the raw reason on every attempt)."""
    told: set[int] = set()

    def on_error(error: KafkaError) -> None:
        problem = connection_problem(settings, error)
        if problem is not None and error.code() not in told:
            told.add(error.code())
            LIBRDKAFKA_LOG.error("%s", problem)

    return on_error


def diagnose(settings: Settings, timeout: float = 10.0) -> str | None:
    """Why the brokers cannot be used with these settings (:func:`connection_problem`), found by
    asking for metadata; None when they answer, or fail for another reason. For error messages."""
    errors: list[KafkaError] = []
    config: dict[str, Any] = {**connection_config(settings), "error_cb": errors.append}
    client = AdminClient(config)
    try:
        client.list_topics(timeout=timeout)
        return None
    except KafkaException:
        client.poll(0)  # serves the queued error callbacks
    return next((p for p in (connection_problem(settings, e) for e in errors) if p is not None), None)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``DBOPT_KAFKA_*`` for Python clients (Faust/aiokafka); None without TLS.

    Checks the brokers' certificates and host names against ``DBOPT_KAFKA_SSL_CA_FILE`` (else the
    system's CAs), and presents the client certificate when one is configured (mutual TLS).
    """
    security = settings.kafka
    if not security.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_ca_file)
    if security.ssl_cert_file and security.ssl_key_file:
        password = security.ssl_key_password.get_secret_value() if security.ssl_key_password else None
        context.load_cert_chain(security.ssl_cert_file, security.ssl_key_file, password)
    return context


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


# a group's coordinator that cannot answer yet: right after a broker starts it loads the offsets
# topic, and for those seconds it knows no group (a listing of groups is then silently empty)
_COORDINATOR_NOT_YET = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
})  # fmt: skip


def existing_groups(admin: AdminClient, group_ids: list[str], timeout: float = 30.0) -> list[str]:
    """Those of ``group_ids`` the broker has (with members or committed offsets), asked again while
    their coordinators are still loading; ``TimeoutError`` if they are not ready within ``timeout``."""
    deadline = time.monotonic() + timeout
    pending, found = list(group_ids), []
    while True:
        waiting = []
        for group, future in admin.describe_consumer_groups(pending, request_timeout=10).items():
            try:
                if future.result().state != ConsumerGroupState.DEAD:
                    found.append(group)
            except KafkaException as exc:
                if exc.args[0].code() not in _COORDINATOR_NOT_YET:
                    raise
                waiting.append(group)
        if not waiting:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"the group coordinator of {', '.join(waiting)} is not ready after {timeout:.0f} s")
        time.sleep(0.5)
        pending = waiting
