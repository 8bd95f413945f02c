"""QueryEvents to Kafka for the OTLP receiver: a request is answered only after the broker has
acknowledged every one of its events.

The producer is the project's (:func:`streams.kafka.clients.producer`: idempotent, ``acks=all``)
with a bounded queue. A daemon thread serves its delivery callbacks; each request awaits an
asyncio future that the last acknowledgement of its events resolves. What cannot be accepted
raises :class:`Unavailable`, which the receiver answers with 503 and ``Retry-After``, so the OTLP
client keeps the spans and sends them again (the spec's retry, with backoff). Nothing is counted
as accepted that the broker did not acknowledge.

Delivery is at-least-once: when some events of a request were acknowledged and others not, the
client's retry sends the acknowledged ones again, with the same ``event_id`` (derived from the
trace and span ids); the worker does not de-duplicate by ``event_id`` (yet), so they count twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Sequence

from confluent_kafka import KafkaError, KafkaException, Message

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.topics import ensure_in_background
from streams.records import QueryEvent
from streams.serde import Codec

log = logging.getLogger("dbopt.otlp")


class Unavailable(Exception):
    """The events could not be handed to Kafka now; the client should retry later."""


class _Request:
    """Acknowledgement accounting of one request's events (callbacks run on the poll thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: KafkaError | None = None
        self.lock = threading.Lock()

    def delivered(self, err: KafkaError | None, _msg: Message) -> None:
        with self.lock:
            if err is not None and self.error is None:
                self.error = err
            self.remaining -= 1
            done = self.remaining == 0
        if done:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class EventPublisher:
    """Produces QueryEvents to ``topic`` (key = service, like the SDK) and awaits their acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.query_events
        ensure_in_background(settings, ["query_events"], log)  # like the SDK: never blocks the start
        self.max_pending = settings.otlp.max_pending_events
        self.timeout_s = settings.otlp.delivery_timeout_s
        self.codec = Codec.from_settings(settings)
        self.codec.prepare("QueryEvent", self.topic)
        self.producer = clients.producer(
            settings,
            compression_type="zstd",
            linger_ms=5,
            queue_buffering_max_messages=self.max_pending,
            # librdkafka gives up on (and reports) a message after this: no request waits forever
            message_timeout_ms=int(self.timeout_s * 1000),
            logger=log.getChild("librdkafka"),  # librdkafka's lines go to logging, not stderr
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="otlp-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    async def publish(self, events: Sequence[QueryEvent]) -> None:
        """Return once every event is acknowledged; raise :class:`Unavailable` otherwise."""
        if not events:
            return
        if len(self.producer) + len(events) > self.max_pending:
            raise Unavailable(f"{len(self.producer)} events are still waiting for the broker")
        values = [(e.service.encode(), self.codec.encode("QueryEvent", e.to_avro(), topic=self.topic)) for e in events]
        pending = _Request(asyncio.get_running_loop(), len(values))
        for produced, (key, value) in enumerate(values):
            try:
                self.producer.produce(self.topic, key=key, value=value, on_delivery=pending.delivered)
            except (BufferError, KafkaException) as exc:  # queue full or refused: the rest is not sent
                for _ in range(len(values) - produced):
                    pending.delivered(KafkaError(KafkaError._QUEUE_FULL), None)  # type: ignore[arg-type]
                log.warning("could not queue events for Kafka: %s", type(exc).__name__)
                break
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), self.timeout_s + 1.0)
        except TimeoutError:
            raise Unavailable("the broker did not acknowledge the events in time") from None
        if pending.error is not None:
            raise Unavailable(f"the broker did not take every event: {pending.error.name()}")

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush and stop; returns the events still unacknowledged."""
        remaining = self.producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=2)
        return remaining
