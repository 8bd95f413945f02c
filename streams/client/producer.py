"""The QueryEvent producer embedded in microservices.

Its one promise to the service: it never blocks and never raises. Events go into
librdkafka's bounded queue (``queue.buffering.max.messages``); when the queue is full, the
broker is down, or anything else goes wrong, the event is dropped and counted
(``dbopt_sdk_events_dropped_total{service,reason}``), and a warning is logged at most once per
``log_interval_s``.

At start it makes sure its topic exists with the configured layout, once per process and without
making the service wait (:func:`streams.kafka.topics.ensure_in_background`): events emitted
meanwhile wait in the queue and are delivered once the topic exists. A broker that is unreachable at
start is retried in the background; a broker that refuses to create the topic gets an error in the
log naming ``dbopt topics create``, and the events are dropped and counted (``delivery_failed``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter as Tally
from typing import Any, Callable, Mapping

from confluent_kafka import KafkaError, Message

from streams.client.events import InvalidEvent, check_context, prepare_record, query_event
from streams.client.metrics import EVENTS_DROPPED, EVENTS_SENT, DropLog
from streams.client.sketch import SketchMode
from streams.config import Settings
from streams.kafka import clients
from streams.kafka.topics import ensure_in_background
from streams.records import QueryEvent, Record
from streams.serde import Codec, SchemaError
from streams.sql import StatementCache

log = logging.getLogger(__name__)


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EventProducer:
    """Normalizes statements in-process and produces QueryEvents to ``settings.topics.query_events``."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        instance_id: str | None = None,
        database: str | None = None,
        *,
        log_interval_s: float = 10.0,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not service:
            raise ValueError("service must be a non-empty name, e.g. 'booking-service'")
        self.service = service
        self.settings = settings
        self.instance_id = instance_id or default_instance_id()
        self.database = database
        self.topic = settings.topics.query_events
        self.cache = StatementCache(settings.sdk_statement_cache)
        self._codec = Codec.from_settings(settings)
        try:  # with a schema registry, register now so no emit waits on HTTP
            self._codec.prepare("QueryEvent", self.topic)
        except Exception as exc:  # a registry that is down must not stop the service; emits retry it
            log.warning("dbopt SDK: could not register QueryEvent with the schema registry yet: %s", exc)
        self._key = service.encode()
        topics = ["query_events", "statement_sketches"] if settings.sdk_mode == "sketch" else ["query_events"]
        self._topic_ready = ensure_in_background(settings, topics, log)
        self._producer = clients.producer(
            settings,
            **{
                "client.id": f"dbopt-sdk-{service}",
                "compression.type": settings.sdk_compression,
                "linger.ms": settings.sdk_linger_ms,
                "queue.buffering.max.messages": settings.sdk_buffer_messages,
                # librdkafka's own lines (e.g. "connection refused") go to Python logging, not stderr
                "logger": logging.getLogger(f"{__name__}.librdkafka"),
                **(extra_config or {}),
            },
        )
        self._sent_metric = EVENTS_SENT.labels(service=service)
        self._drop_log = DropLog(log, service, log_interval_s)
        self._lock = threading.Lock()
        self._closed = False
        self.sent = 0
        self.dropped: Tally[str] = Tally()
        # DBOPT_SDK_MODE=sketch: statements aggregated into StatementSketch records (streams.client.sketch)
        self._sketches = SketchMode(self) if settings.sdk_mode == "sketch" else None

    # -- emitting -------------------------------------------------------------------------

    def emit_statement(
        self,
        sql: str,
        duration_ms: float,
        rows: int,
        error: str | None = None,
        event_time_ms: int | None = None,
        **context: object,
    ) -> bool:
        """Queue one event for an executed statement (in sketch mode: count it in its sketch).
        Returns False when it was dropped."""
        if (self._sketches is not None and not self._closed
                and self._sketches.add(sql, duration_ms, rows, error, event_time_ms, context)):  # fmt: skip
            return True
        try:
            check_context(context)
            if self.database is not None:
                context = {"database": self.database, **context}
            record = query_event(
                sql=sql, cache=self.cache, service=self.service, instance_id=self.instance_id,
                duration_ms=duration_ms, rows=rows, error=error, event_time_ms=event_time_ms,
                context=context,
            )
        except Exception:  # a bad argument from the service must not break its request
            return self._drop("invalid_event")
        return self._produce(record)

    def emit(self, record: Mapping[str, Any]) -> bool:
        """Queue a pre-built QueryEvent dict (its query_text is normalized). False when dropped."""
        try:
            prepared = self.prepare(record)
        except InvalidEvent:
            return self._drop("invalid_event")
        return self._produce(prepared)

    def prepare(self, record: Mapping[str, Any]) -> QueryEvent:
        """The QueryEvent that :meth:`emit` would send; raises :class:`InvalidEvent` (for tools
        such as ``dbopt produce`` that must report bad input instead of counting it)."""
        prepared = prepare_record(
            record, cache=self.cache, service=self.service, instance_id=self.instance_id, database=self.database
        )
        try:
            self._codec.validate(prepared.SCHEMA, prepared.to_avro())
        except SchemaError as exc:
            raise InvalidEvent(str(exc)) from None
        return prepared

    def _produce(self, record: QueryEvent) -> bool:
        if self._closed:
            return self._drop("closed")
        try:
            value = self._codec.encode_record(record, topic=self.topic)
        except Exception:
            return self._drop("encode_error")
        try:
            self._producer.produce(self.topic, value=value, key=self._key, on_delivery=self._on_delivery)
        except BufferError:
            return self._drop("buffer_full")
        except Exception:
            return self._drop("produce_error")
        finally:
            self._producer.poll(0)
        return True

    def produce_record(
        self, topic: str, record: Record, on_delivery: Callable[[KafkaError | None, Message], None]
    ) -> None:
        """Queue another dbopt record keyed by the service (``watch_pool``'s PoolSnapshots) on the
        same connection; the caller counts its own deliveries. Raises ``BufferError`` when full."""
        value = self._codec.encode_record(record, topic=topic)
        self._producer.produce(topic, value=value, key=self._key, on_delivery=on_delivery)
        self._producer.poll(0)

    # -- delivery accounting ---------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._drop("delivery_failed")
            return
        self.count_sent()

    def count_sent(self, executions: int = 1) -> None:
        """Executions the broker acknowledged (one per event, a sketch's count per sketch)."""
        with self._lock:
            self.sent += executions
        self._sent_metric.inc(executions)

    def count_dropped(self, reason: str, executions: int = 1) -> None:
        """Executions lost (a sketch that could not be queued or delivered counts all of its)."""
        self._drop(reason, executions)

    def _drop(self, reason: str, count: int = 1) -> bool:
        with self._lock:
            self.dropped[reason] += count
        EVENTS_DROPPED.labels(service=self.service, reason=reason).inc(count)
        self._drop_log.record(reason)
        return False

    # -- lifecycle -------------------------------------------------------------------------

    def topic_ready(self, timeout: float = 0.0) -> bool:
        """Whether the topic is known to exist, waiting up to ``timeout`` seconds (for readiness probes)."""
        return self._topic_ready.wait(timeout)

    def pending(self) -> int:
        """Events queued or in flight, not yet acknowledged."""
        return len(self._producer)

    def flush(self, timeout: float = 5.0) -> int:
        """Wait up to ``timeout`` seconds for queued events; returns how many are still pending."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush, then count what could not be delivered as dropped (reason ``unflushed``)."""
        if self._closed:
            return
        if self._sketches is not None:
            self._sketches.close()  # the open intervals go out before the flush
        self._closed = True
        remaining = self.flush(timeout)
        if remaining:
            self._drop("unflushed", remaining)

    def __enter__(self) -> "EventProducer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
