"""The windows stage of ``dbopt worker``: query events and statement sketches in, WindowStats out
(:class:`streams.windows.PartitionWindows` wired to Kafka with confluent-kafka).

It does not run on Faust: measured on the development machine, a Faust agent that does nothing
with its events reads about 14,000 events/s, a tenth of a plain confluent-kafka consumer
(``bench/README.md``). So the stage is a consume–process–produce loop of its own, with the state
store Faust would have given it:

* **Input.** One consumer in the group ``DBOPT_WORKER_APP_ID`` reads the query-events topic and
  the statement-sketches topic. Both are keyed by service and have the same partition count, and
  the *range* assignor gives every member the same partition numbers of both topics, so partition
  ``p`` of both is one :class:`PartitionWindows`.
* **State** lives in memory per partition and is made durable in a compacted changelog topic
  ``<app id>-windows-changelog`` (partition ``p`` for events partition ``p``): compact binary
  values, each changed entry written once per commit interval, not once per event.
* **Commit.** Every ``DBOPT_WORKER_COMMIT_INTERVAL_MS`` the stage writes the changelog records,
  waits until the broker acknowledged everything it produced (windows, dead letters, changelog),
  and only then commits the source offsets: state is never behind the committed offsets. It can
  be ahead (a crash after the changelog write); the per-pane source offsets and the judged
  offsets make a replay count nothing twice (see :mod:`streams.windows.engine`).
* **Rebalance.** Revoked partitions are checkpointed and committed before they go; an assigned
  partition is rebuilt from its changelog partition — unless this process held it last and the
  changelog has not grown since, then the state in memory is kept.
* **Idle partitions.** Every ``DBOPT_WORKER_TICK_INTERVAL_MS`` a caught-up partition without a
  record for ``DBOPT_WINDOW_IDLE_TIMEOUT_MS`` has its watermark moved to wall clock minus
  ``DBOPT_WINDOW_ALLOWED_LATENESS_MS``, so its windows close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.allocator import release_memory
from streams.config import Settings
from streams.ingest import Rejected, dead_letter
from streams.ingest.reader import EventReader
from streams.ingest.sketches import SketchReader
from streams.kafka import clients
from streams.kafka.health import Health
from streams.observe.metrics import (
    CONSUMER_LAG,
    DLQ_RECORDS,
    EVENTS_IN,
    FINGERPRINT_OVERFLOW,
    LATE_EVENTS,
    LIVE_KEYS,
    LIVE_PANES,
    SKETCHES_IN,
    WINDOWS_EMITTED,
)
from streams.serde import Codec
from streams.windows.engine import EVENTS, NO_TIME, SKETCHES, PartitionWindows, late
from streams.windows.panes import WindowSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


# compacted; short segments, so compaction keeps the restore of a partition short
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.ms": str(10 * 60 * 1000), "min.cleanable.dirty.ratio": "0.2"}


# a changelog read that gets nowhere for this long is started again on a new consumer, at most
# RESTORE_ATTEMPTS times: after a broker restart an assigned consumer can stay stuck without an error
# (reported upstream, librdkafka#5153), and a restore must not wait for it forever
RESTORE_STALL_S = 15.0
RESTORE_ATTEMPTS = 3


# a checkpoint this large (a burst of new keys, a window of many keys closing) leaves freed memory
# in the C allocator's arenas; hand it back to the system
TRIM_AFTER = 10_000


def run_windows_stage(settings: Settings, health: Health, stop: threading.Event) -> None:
    """The windows stage until ``stop``; started again from its last commit, on new clients, when the
    broker did not take its records within ``DBOPT_WORKER_DELIVERY_TIMEOUT_MS``: after a broker restart a
    producer can stay stuck with records it never delivers. The new stage restores its partitions from
    the changelog and replays from the committed offsets, as a restarted process would."""
    while True:
        try:
            WindowsStage(settings, health).run(stop)
            return
        except DeliveryFailed as exc:
            if stop.is_set():
                raise
            log.warning("windows: %s; starting the stage again from its last commit", exc)


def changelog_topic_name(settings: Settings) -> str:
    return f"{settings.windows.app_id}-windows-changelog"


class DeliveryFailed(RuntimeError):
    """The broker did not take a record: the stage stops without committing (a restart replays)."""


@dataclass
class _Held:
    """A partition's state kept after a revoke, with the changelog's end offset then."""

    state: PartitionWindows
    changelog_end: int


class WindowsStage:
    """One process's share of the windows: the partitions the group gives it."""

    def __init__(self, settings: Settings, health: Health | None = None) -> None:
        self.settings = settings
        self.health = health or Health("windows")
        windows = settings.windows
        self.codec = Codec.from_settings(settings)
        self.reader = EventReader(self.codec, settings)
        self.spec = WindowSpec.from_settings(windows)
        self.sketch_reader = SketchReader(self.codec, settings, self.spec)
        self.events_topic = settings.topics.query_events
        self.sketches_topic = settings.topics.statement_sketches
        self.changelog = changelog_topic_name(settings)
        self.databases = frozenset(settings.databases)
        self.states: dict[int, PartitionWindows] = {}
        self._held: dict[int, _Held] = {}
        # per source and partition: next offset to read, and when a record last came (monotonic)
        self._next: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._last_record: tuple[dict[int, float], dict[int, float]] = ({}, {})
        self._failures: list[KafkaError] = []
        self._broken = False
        # librdkafka's buffers bounded (8 MB each way, about 50,000 events): they count in the worker's memory
        self.consumer = clients.consumer(settings, windows.app_id, partition_assignment_strategy="range",
                                         session_timeout_ms=windows.session_timeout_ms,
                                         queued_max_messages_kbytes=8 * 1024, fetch_max_bytes=8 * 1024 * 1024)  # fmt: skip
        self.producer = clients.producer(settings, linger_ms=5, compression_type="zstd",
                                         delivery_report_only_error=True, queue_buffering_max_kbytes=8 * 1024,
                                         message_timeout_ms=windows.delivery_timeout_ms)  # fmt: skip
        self._restorer = self._new_restorer()  # assigned only while restoring

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, process, emit, checkpoint and commit until ``stop`` is set."""
        windows = self.settings.windows
        self.consumer.subscribe([self.events_topic, self.sketches_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)  # fmt: skip
        next_commit = next_tick = time.monotonic()
        try:
            while not stop.is_set():
                self.health.beat()
                messages = self.consumer.consume(windows.batch_max, timeout=windows.batch_within_ms / 1000)
                if messages:
                    self.process(messages)
                now = time.monotonic()
                if now >= next_tick:
                    self.tick()
                    next_tick = now + windows.tick_interval_ms / 1000
                if now >= next_commit:
                    self.commit()
                    next_commit = now + windows.commit_interval_ms / 1000
                self.producer.poll(0)
            self.commit(final=True)
        except BaseException:
            self._broken = True  # nothing more may be committed: a restart replays from the last commit
            raise
        finally:
            self.health.set_ready(False, "stopped")
            self.consumer.close()  # leaves the group; revoked partitions were committed above
            self._restorer.close()
            self.producer.flush(10)

    def process(self, messages: list[Message]) -> None:
        """Apply one consumed batch, then emit the windows it closed."""
        now_ms = int(time.time() * 1000)
        wall = time.monotonic()
        read = self.reader.read
        events_topic = self.events_topic
        next_events, next_sketches = self._next
        batch: dict[int, tuple[PartitionWindows, int | None, int | None]] = {}  # partition -> state, positions
        events = sketches = 0
        for message in messages:
            if message.error() is not None:
                log.warning("windows: consumer: %s", message.error())
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on every message without an error
            entry = batch.get(partition)
            if entry is None:
                state = self.states.get(partition)
                if state is None:  # lost in a rebalance inside this batch's consume()
                    continue
                self._hold(partition, state, wall)  # before its records: which inputs the watermark waits for
                entry = batch[partition] = (state, next_events.get(partition), next_sketches.get(partition))
            state = entry[0]
            if message.topic() == events_topic:
                events += 1
                next_events[partition] = offset + 1
                execution = read(message.value(), now_ms)
                if isinstance(execution, Rejected):
                    self._dead_letter(message, execution, now_ms)
                elif state.add(execution, offset) == "late":
                    self._late(message, state, execution.event_time, now_ms)
            else:
                sketches += 1
                next_sketches[partition] = offset + 1
                sketch = self.sketch_reader.read(message.value(), now_ms)
                if isinstance(sketch, Rejected):
                    self._dead_letter(message, sketch, now_ms)
                elif state.add_sketch(sketch, offset) == "late":
                    self._late(message, state, sketch.interval_start, now_ms)
        EVENTS_IN.inc(events)
        SKETCHES_IN.inc(sketches)
        for partition, (state, events_before, sketches_before) in batch.items():
            if next_events.get(partition) != events_before:
                self._last_record[EVENTS][partition] = wall
            if next_sketches.get(partition) != sketches_before:
                self._last_record[SKETCHES][partition] = wall
            self._emit(state)
            for service, n in state.overflowed.items():
                FINGERPRINT_OVERFLOW.labels(service).inc(n)
            state.overflowed.clear()

    def tick(self) -> None:
        """Idle partitions: their watermark moves to wall clock - allowed lateness, their windows
        close; every partition: which inputs hold its watermark, the consumer lag."""
        windows = self.settings.windows
        wall_ms = int(time.time() * 1000)
        wall = time.monotonic()
        for partition, state in self.states.items():
            self._hold(partition, state, wall)
            if not any(state.holds) and self._idle(partition, wall):
                state.tick(wall_ms, windows.allowed_lateness_ms)
            self._emit(state)
            clock = state.clock
            log.debug("windows: partition %d holds %s marks %s watermark %s horizon %s emitted %s", partition,
                      state.holds, clock.marks, clock.watermark, clock.horizon, clock.emitted)  # fmt: skip
        LIVE_KEYS.set(sum(len(state.statements) for state in self.states.values()))
        LIVE_PANES.set(sum(len(bucket) for state in self.states.values() for by_start in state.panes
                           for bucket in by_start.values()))  # fmt: skip

    def commit(self, final: bool = False) -> None:
        """Checkpoint every partition, wait for the broker to have everything, commit offsets.
        ``final`` (revoke, stop) checkpoints twice, so the clock stored carries the emitted horizon
        acknowledged by the first flush and the next owner re-emits nothing."""
        written = 0
        for _ in range(2 if final else 1):
            for partition, state in self.states.items():
                for key, value in state.checkpoint():
                    self._produce(self.changelog, key, value, partition)
                    written += 1
            self._flush()
        if written >= TRIM_AFTER:
            release_memory()
        offsets = [TopicPartition(topic, partition, offset)
                   for topic, source in ((self.events_topic, EVENTS), (self.sketches_topic, SKETCHES))
                   for partition, offset in self._next[source].items() if partition in self.states]  # fmt: skip
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:  # the broker away, a rebalance: the records come again (counted once)
                log.warning("windows: offsets not committed, the next commit catches up: %s", exc)

    # --- output -----------------------------------------------------------------------------

    def _emit(self, state: PartitionWindows) -> None:
        if not state.due:
            return
        closing = state.closing(emitted_at=int(time.time() * 1000))
        if closing is None:
            return
        topic = self.settings.topics.latency_windows
        emitted = {"tumbling": 0, "hopping": 0}
        for record in closing.records:
            self._produce(topic, record.service.encode(), self.codec.encode_record(record, topic=topic))
            emitted[record.window_kind] += 1
        for kind, n in emitted.items():
            WINDOWS_EMITTED.labels(kind).inc(n)
        if sum(emitted.values()) >= TRIM_AFTER:
            release_memory()

    def _dead_letter(self, message: Message, rejected: Rejected, now_ms: int) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        record = dead_letter(message.key(), message.value(), topic, partition, offset, rejected, now_ms)
        self._produce(self.settings.topics.dlq, message.key(), self.codec.encode_record(record, topic=self.settings.topics.dlq))
        DLQ_RECORDS.labels(rejected.reason).inc()

    def _late(self, message: Message, state: PartitionWindows, event_time: int, now_ms: int) -> None:
        LATE_EVENTS.inc()
        self._dead_letter(message, late(event_time, state, self.settings.windows), now_ms)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int = -1) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, partition=partition, on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self._failures.append(error)

    def _flush(self) -> None:
        """Wait until the broker acknowledged everything produced; a failure stops the stage."""
        while self.producer.flush(1.0) > 0:
            self.health.beat()
        if self._failures:
            raise DeliveryFailed(f"{len(self._failures)} record(s) not delivered, e.g. {self._failures[0]}")

    # --- partitions -------------------------------------------------------------------------

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        for partition in numbers:
            held = self._held.pop(partition, None)
            if held is not None and 0 <= held.changelog_end == self._changelog_end(partition):
                self.states[partition] = held.state  # nobody wrote it since: the memory is current
            else:
                self.states[partition] = self._retrying(f"restoring partition {partition}",
                                                        lambda p=partition: self._restore(p))  # type: ignore[misc]
        self._held.clear()
        self._retrying("reading the committed offsets", lambda: self._start_positions(partitions))
        started = time.monotonic()
        for partition in numbers:  # a partition counts as quiet only after a full idle timeout
            for last in self._last_record:
                last.setdefault(partition, started)
        log.info("windows: assigned partitions %s", numbers)
        self.health.set_ready(bool(numbers), "" if numbers else "no partitions assigned")

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        if not self._broken:
            self.commit(final=True)
        for partition in numbers:
            state = self.states.pop(partition, None)
            if state is not None and not self._broken:  # a broken stage is going away: nothing to keep
                self._held[partition] = _Held(state, self._changelog_end(partition))
        log.info("windows: revoked partitions %s", numbers)

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        for partition in {tp.partition for tp in partitions}:
            self.states.pop(partition, None)  # another member owns it now: nothing may be written
        log.warning("windows: lost partitions %s", sorted({tp.partition for tp in partitions}))

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        """``action``, tried again with backoff while the broker cannot answer (a restart, a leader
        moving) — up to the session timeout: a rebalance callback must not end the stage for that."""
        delay, deadline = 0.5, time.monotonic() + self.settings.windows.session_timeout_ms / 1000
        while True:
            try:
                return action()
            except KafkaException as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("windows: %s failed, trying again in %.1f s: %s", what, delay, exc)
                self.health.beat()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _start_positions(self, partitions: list[TopicPartition]) -> None:
        """Where each assigned partition resumes: its committed offset, else its first offset."""
        for source in (EVENTS, SKETCHES):
            self._next[source].clear()
        for tp in self.consumer.committed(partitions, timeout=30):
            offset = tp.offset
            if offset < 0:
                offset = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[0]
            self._next[EVENTS if tp.topic == self.events_topic else SKETCHES][tp.partition] = offset

    def _changelog_end(self, partition: int) -> int:
        """The changelog partition's end offset (-1 when the broker cannot say: the state is restored)."""
        try:
            return int(self._restorer.get_watermark_offsets(TopicPartition(self.changelog, partition), timeout=10)[1])
        except KafkaException:
            return -1

    def _restore(self, partition: int) -> PartitionWindows:
        """The state of ``partition`` rebuilt from its changelog partition."""
        state = PartitionWindows(partition, self.spec, self.settings.ingest.max_fingerprints_per_service,
                                 self.databases)  # fmt: skip
        tp = TopicPartition(self.changelog, partition, OFFSET_BEGINNING)
        low, high = self._restorer.get_watermark_offsets(tp, timeout=10)
        records = self._read_changelog(tp, high) if high > low else []
        state.load(records)
        log.info("windows: partition %d restored from %d changelog records", partition, len(records))
        return state

    def _new_restorer(self) -> Consumer:
        return clients.consumer(self.settings, f"{self.settings.windows.app_id}-restore")

    def _read_changelog(self, tp: TopicPartition, high: int, stall_s: float = RESTORE_STALL_S) -> list[tuple[bytes, bytes | None]]:
        """The records of changelog partition ``tp`` up to offset ``high``; a read that gets nowhere for
        ``stall_s`` starts again on a new consumer, and after :data:`RESTORE_ATTEMPTS` of them fails."""
        for attempt in range(1, RESTORE_ATTEMPTS + 1):
            records: list[tuple[bytes, bytes | None]] = []
            self._restorer.assign([tp])
            try:
                reached, since = -1, time.monotonic()
                while True:
                    for message in self._restorer.consume(10_000, timeout=1.0):
                        key = message.key()
                        if message.error() is None and key is not None:
                            records.append((key, message.value()))
                    self.health.beat()
                    position = self._restorer.position([tp])[0].offset
                    if position >= high:
                        return records
                    if position > reached:
                        reached, since = position, time.monotonic()
                    elif time.monotonic() - since > stall_s:
                        break
            finally:
                self._restorer.unassign()
            log.warning("windows: restoring partition %d: nothing read for %.0f s at offset %d of %d (attempt %d of %d); "
                        "starting again on a new consumer", tp.partition, stall_s, reached, high, attempt,
                        RESTORE_ATTEMPTS)  # fmt: skip
            self._restorer.close()
            self._restorer = self._new_restorer()
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                        f"changelog partition {tp.partition} not read to offset {high}"))

    def _hold(self, partition: int, state: PartitionWindows, wall: float) -> None:
        """Tell ``state`` which inputs its watermark waits for: one with unread records (or whose
        end is not known yet), and one with data that had a record within the idle timeout."""
        idle_s = self.settings.windows.idle_timeout_ms / 1000
        for source, topic in ((EVENTS, self.events_topic), (SKETCHES, self.sketches_topic)):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            position = self._next[source].get(partition, 0)
            backlog = high < 0 or position < high
            recent = wall - self._last_record[source].get(partition, -idle_s) < idle_s
            state.hold(source, backlog or (state.clock.marks[source] != NO_TIME and recent))

    def _idle(self, partition: int, wall: float) -> bool:
        """No record for the idle timeout, and caught up on both inputs (asked of the broker)."""
        idle_s = self.settings.windows.idle_timeout_ms / 1000
        if any(wall - last.get(partition, 0.0) < idle_s for last in self._last_record):
            return False
        caught_up = True
        for topic, source in ((self.events_topic, EVENTS), (self.sketches_topic, SKETCHES)):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            except KafkaException:  # the broker cannot say: not idle, as far as we know
                return False
            position = self._next[source].get(partition, 0)
            CONSUMER_LAG.labels(topic, str(partition)).set(max(high - position, 0))
            caught_up = caught_up and position >= high
        return caught_up
