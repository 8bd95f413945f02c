"""The windows agent: ingest, windowed statistics, emit-final, idle ticks (Faust I/O around
:class:`streams.windows.PartitionWindows`).

One agent with concurrency 1 reads the query-events topic AND an internal ticks topic with the
same partition count; Faust co-partitions the topics of one agent, so partition ``p`` of both
lands on the same worker. A timer sends a tick (wall-clock milliseconds) to every events
partition this worker owns; ticks arrive through the stream like events, so table writes for an
idle partition happen in stream iteration and go to that partition's changelog.

Events are processed in ``stream.take_events()`` batches. Faust routes a table write to the
changelog partition of the *current event*, which it does not set inside a take() batch; the
agent sets it explicitly (:func:`acting_as`) to an event of the partition being written, so
every write lands in the right changelog partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from contextlib import contextmanager
from itertools import groupby
from typing import Any, Iterable, Iterator, Sequence

import faust
from faust.streams import _current_event
from faust.types import TP, EventT, StreamT

from streams.config import Settings
from streams.ingest import Accepted, Rejected, dead_letter, validate
from streams.observe.metrics import DLQ_RECORDS, EVENTS_IN, FINGERPRINT_OVERFLOW, LATE_EVENTS, WINDOWS_EMITTED
from streams.serde import Codec
from streams.windows import PartitionWindows, WindowSpec
from streams.windows.engine import late

log = logging.getLogger(__name__)

TABLE_NAME = "windows"


def ticks_topic_name(settings: Settings) -> str:
    return f"{settings.windows.app_id}-ticks"


@contextmanager
def acting_as(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table reads and writes use its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableStore:
    """:class:`streams.windows.Store` over a Faust table (call inside :func:`acting_as`)."""

    def __init__(self, table: faust.Table) -> None:
        self.table = table

    def get(self, key: str) -> dict[str, Any] | None:
        return self.table.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.table[key] = value

    def delete(self, key: str) -> None:
        del self.table[key]

    def keys(self) -> Iterable[str]:
        return list(self.table.keys())


class WindowsProcessor:
    def __init__(self, app: faust.App, settings: Settings, partitions: int) -> None:
        self.app = app
        self.settings = settings
        self.codec = Codec.from_settings(settings)
        self.spec = WindowSpec.from_settings(settings.windows)
        topics = settings.topics
        self.events_topic = topics.query_events
        self.ticks_topic = ticks_topic_name(settings)
        self.source = app.topic(self.events_topic, self.ticks_topic, key_serializer="raw", value_serializer="raw")
        self.ticks = app.topic(self.ticks_topic, key_serializer="raw", value_serializer="raw")
        self.output = app.topic(topics.latency_windows, key_serializer="raw", value_serializer="raw")
        self.dlq = app.topic(topics.dlq, key_serializer="raw", value_serializer="raw")
        # string keys, JSON-able dict values (Faust's default json table serializers)
        self.table = app.Table(TABLE_NAME, default=None, partitions=partitions)
        self.store = TableStore(self.table)
        # per events partition: next offset to process and monotonic time of the last event
        self._position: dict[int, int] = {}
        self._last_event: dict[int, float] = {}
        self._started = time.monotonic()

    # --- the agent ----------------------------------------------------------------------------

    async def run(self, stream: StreamT[Any]) -> None:
        windows = self.settings.windows
        async for batch in stream.take_events(windows.batch_max, windows.batch_within_ms / 1000):
            await self.process(batch)

    async def process(self, batch: Sequence[EventT]) -> None:
        by_partition = sorted(batch, key=lambda e: e.message.partition)  # stable: keeps log order
        for partition, group in groupby(by_partition, key=lambda e: e.message.partition):
            events = list(group)
            with acting_as(events[-1]):
                state = PartitionWindows(
                    partition, self.spec, self.store, self.settings.ingest.max_fingerprints_per_service
                )
                for event in events:
                    if event.message.topic == self.ticks_topic:
                        due = self._tick(state, event)
                    else:
                        due = await self._event(state, event)
                    if due:
                        await self._close(state)
                state.flush()
                for service, n in state.overflowed.items():
                    FINGERPRINT_OVERFLOW.labels(service).inc(n)

    async def _event(self, state: PartitionWindows, event: EventT) -> bool:
        message = event.message
        EVENTS_IN.inc()
        self._position[message.partition] = message.offset + 1
        self._last_event[message.partition] = time.monotonic()
        now_ms = int(time.time() * 1000)
        result = validate(message.value, self.codec, self.settings, now_ms)
        if isinstance(result, Rejected):
            await self._dead_letter(event, result, now_ms)
            return False
        assert isinstance(result, Accepted)
        outcome, due = state.apply(result, message.offset)
        if outcome == "late":
            LATE_EVENTS.inc()
            await self._dead_letter(event, late(result.event.event_time, state, self.settings.windows), now_ms)
        return due

    def _tick(self, state: PartitionWindows, event: EventT) -> bool:
        partition = event.message.partition
        if not self._idle(partition):
            return False
        try:
            wall_ms = int(event.message.value or b"")
        except (TypeError, ValueError):
            log.warning("ignoring a malformed tick at %s[%s]@%s", self.ticks_topic, partition, event.message.offset)
            return False
        return state.tick(wall_ms, self.settings.windows.allowed_lateness_ms)

    def _idle(self, partition: int) -> bool:
        """Caught up on the events partition, with no event for the idle timeout."""
        tp = TP(self.events_topic, partition)
        highwater = self.app.consumer.highwater(tp)
        if highwater is None:
            return False
        position = self._position.get(partition)
        if position is None:
            # nothing processed since start: the consumer's start position (committed offset)
            position = self.app.consumer._read_offset.get(tp) or 0  # noqa: SLF001 - no public accessor
        quiet_since = self._last_event.get(partition, self._started)
        return position >= highwater and time.monotonic() - quiet_since >= self.settings.windows.idle_timeout_ms / 1000

    async def _close(self, state: PartitionWindows) -> None:
        """Emit every window due, wait until the broker has them all, then store the new horizon."""
        state.flush()
        closing = state.closing(emitted_at=int(time.time() * 1000))
        if closing is None:
            return
        topic = self.settings.topics.latency_windows
        deliveries = []
        for record in closing.records:
            value = self.codec.encode_record(record, topic=topic)
            deliveries.append(await self.output.send(key=record.service.encode(), value=value))
        await asyncio.gather(*deliveries)
        for record in closing.records:
            WINDOWS_EMITTED.labels(record.window_kind).inc()
        state.commit_close(closing)

    async def _dead_letter(self, event: EventT, rejected: Rejected, now_ms: int) -> None:
        message = event.message
        record = dead_letter(
            message.key, message.value, message.topic, message.partition, message.offset, rejected, now_ms
        )
        value = self.codec.encode_record(record, topic=self.settings.topics.dlq)
        # delivered before the source offset is committed (Faust flushes the producer first)
        await self.dlq.send(key=message.key, value=value)
        DLQ_RECORDS.labels(rejected.reason).inc()

    # --- the timer ----------------------------------------------------------------------------

    async def send_ticks(self) -> None:
        now_ms = str(int(time.time() * 1000)).encode()
        for tp in self.app.consumer.assignment():
            if tp.topic == self.events_topic:
                await self.ticks.send(value=now_ms, partition=tp.partition)
