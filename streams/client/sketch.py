"""The SDK's sketch mode (``DBOPT_SDK_MODE=sketch``): executions aggregated in the service, one
StatementSketch per statement, context and flush interval instead of one QueryEvent per execution.

Per (statement text, database, vendor_category, wedding_id) and interval the service keeps the
worker's own quantile bins (:mod:`streams.windows.sketch`: same mapping, same relative accuracy)
and the exact count, errors, rows, sum, min and max. The worker adds the bins and totals into the
pane the interval lies in, so a window holds exactly what it would have held with events: the same
count, errors, rows, sum, min and max, and quantiles within the sketch's relative accuracy.

**Intervals.** ``DBOPT_SDK_FLUSH_INTERVAL_MS`` (10 s) long, aligned to the epoch, and cut at the
worker's pane boundaries (panes of gcd(``DBOPT_WINDOW_TUMBLING_MS``, ``DBOPT_WINDOW_HOP_MS``), 60 s):
an interval never straddles a pane, so it lies inside every window that contains any of its
executions. With the defaults a minute holds six intervals. An interval is sent once it has ended
(on the next statement, or by a timer within a second), so a sketch reaches the worker at most about
one interval plus a second after its first execution; keep that under the window grace (10 s)
plus whatever else delays delivery, or the worker finds its window closed (DLQ, reason ``late``).

**Single events still.** An execution at least ``DBOPT_SDK_EVENT_ABOVE_MS`` slow, a failed one (with
``DBOPT_SDK_ERROR_EVENTS``, the default) and one with an invalid duration go as their own QueryEvent,
exactly as in events mode, and not into a sketch — so nothing is counted twice.

Never blocking, never raising, like the producer: a sketch that cannot be queued or delivered is
counted as dropped executions (``dbopt_sdk_events_dropped_total``, ``reason``), sent ones in
``dbopt_sdk_events_sent_total`` (executions) and ``dbopt_sdk_sketches_sent_total`` (records).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, Message
from prometheus_client import Counter

from streams.client.events import CONTEXT_FIELDS, UNPARSABLE_TEXT, now_ms
from streams.records import StatementSketch
from streams.sql import NormalizedStatement, SqlParseError
from streams.windows.sketch import MAPPING

if TYPE_CHECKING:
    from streams.client.producer import EventProducer

SKETCHES_SENT = Counter("dbopt_sdk_sketches_sent", "StatementSketch records acknowledged by Kafka.", ["service"])
_BINS_PER_DOUBLING = MAPPING.multiplier
_log2, _ceil = math.log2, math.ceil
_CONTEXT = frozenset(CONTEXT_FIELDS)
ContextKey = tuple[str, object, object, object]  # (normalized text, database, vendor_category, wedding_id)


class _Acc:
    """The executions of one statement and context in one interval."""

    __slots__ = ("bins", "count", "errors", "last", "max", "min", "rows", "statement", "sum", "zeros")

    def __init__(self, statement: NormalizedStatement | None) -> None:
        self.statement = statement  # None: the text does not parse
        self.bins: dict[int, int] = {}
        self.count = self.errors = self.rows = self.zeros = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0


def interval_of(event_time: int, interval_ms: int, pane_ms: int) -> tuple[int, int]:
    """[start, end) of the interval ``event_time`` falls in: epoch-aligned, cut at pane boundaries."""
    return (max(event_time - event_time % interval_ms, event_time - event_time % pane_ms),
            min(event_time - event_time % interval_ms + interval_ms, event_time - event_time % pane_ms + pane_ms))  # fmt: skip


class SketchMode:
    """Aggregates an :class:`EventProducer`'s statements into StatementSketch records."""

    def __init__(self, producer: EventProducer, *, tick_s: float = 1.0) -> None:
        settings = producer.settings
        self.producer = producer
        self.topic = settings.topics.statement_sketches
        self.interval_ms = settings.sdk_flush_interval_ms
        self.pane_ms = math.gcd(settings.windows.tumbling_ms, settings.windows.hop_ms)
        self.event_above_ms = settings.sdk_event_above_ms
        self.error_events = settings.sdk_error_events
        self._lock = threading.Lock()
        self._open: dict[tuple[int, int], dict[ContextKey, _Acc]] = {}  # (start, end) -> key -> executions
        self._span = (0, 0)  # the interval of the last execution, and its accumulators
        self._current: dict[ContextKey, _Acc] = {}
        self._sent_metric = SKETCHES_SENT.labels(service=producer.service)
        self.sketches_sent = 0
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, args=(tick_s,), name="dbopt-sdk-sketches", daemon=True)
        self._timer.start()

    def add(self, sql: str, duration_ms: float, rows: int, error: str | None, event_time_ms: int | None,
            context: Mapping[str, object]) -> bool:  # fmt: skip
        """Count one execution in its sketch: True; False when it must go as its own QueryEvent."""
        if not 0.0 <= duration_ms < self.event_above_ms or (error and self.error_events):
            return False  # slow, failed, or not a valid duration (NaN, negative): a single event
        if context and not _CONTEXT.issuperset(context):
            return False  # the event path drops it as invalid_event
        try:
            statement: NormalizedStatement | None = self.producer.cache.get(sql)
            text = statement.query_text  # type: ignore[union-attr]
        except SqlParseError:
            statement, text = None, UNPARSABLE_TEXT
        t = now_ms() if event_time_ms is None else int(event_time_ms)
        database = context.get("database", self.producer.database) if context else self.producer.database
        key = (text, database, context.get("vendor_category"), context.get("wedding_id")) if context else (
            text, database, None, None)  # fmt: skip
        ready = None
        with self._lock:
            start, end = self._span
            if start <= t < end:
                accs = self._current
            else:
                span = interval_of(t, self.interval_ms, self.pane_ms)
                accs = self._open.setdefault(span, {})
                if span[0] > start:  # time moved on: this is the newest interval
                    self._span, self._current = span, accs
                    ready = self._take_ended(t)
            acc = accs.get(key)
            if acc is None:
                acc = accs[key] = _Acc(statement)
            if duration_ms > 0:
                bin_key = _ceil(_log2(duration_ms) * _BINS_PER_DOUBLING)  # MAPPING.key(duration_ms)
                acc.bins[bin_key] = acc.bins.get(bin_key, 0) + 1
            else:
                acc.zeros += 1
            acc.count += 1
            acc.sum += duration_ms
            if duration_ms < acc.min:
                acc.min = duration_ms
            if duration_ms > acc.max:
                acc.max = duration_ms
            if error:
                acc.errors += 1
            if rows > 0:
                acc.rows += rows
            if t > acc.last:
                acc.last = t
        if ready:
            self._send(ready)
        return True

    def flush(self, everything: bool = False) -> None:
        """Send the intervals that have ended (``everything``: the open ones too, e.g. at close)."""
        with self._lock:
            ready = self._take_ended(None if everything else now_ms())
        self._send(ready)

    def close(self) -> None:
        self._stop.set()
        self.flush(everything=True)

    # --- internals --------------------------------------------------------------------------

    def _tick(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the timer must survive anything; drops are counted in _send
                continue

    def _take_ended(self, now: int | None) -> list[tuple[tuple[int, int], ContextKey, _Acc]]:
        """Remove and return the accumulators of intervals ended by ``now`` (None: all); under the lock."""
        spans = [span for span in self._open if now is None or span[1] <= now]
        taken = [(span, key, acc) for span in spans for key, acc in self._open.pop(span).items()]
        if self._span in spans:
            self._span, self._current = (0, 0), {}
        return taken

    def _send(self, ready: list[tuple[tuple[int, int], ContextKey, _Acc]]) -> None:
        producer = self.producer
        for (start, end), (text, database, vendor_category, wedding_id), acc in ready:
            statement = acc.statement
            fingerprint, statement_type, tables = (
                (None, "UTILITY", ()) if statement is None
                else (statement.fingerprint, statement.statement_type, statement.tables))  # fmt: skip
            keys = sorted(acc.bins)
            record = StatementSketch(
                sketch_id=str(uuid.uuid4()), service=producer.service, instance_id=producer.instance_id,
                interval_start=start, interval_end=end, last_event_time=max(acc.last, start),
                fingerprint=fingerprint, query_text=text, statement_type=statement_type, tables=tables,
                database=_text(database), vendor_category=_text(vendor_category), wedding_id=_text(wedding_id),
                relative_accuracy=MAPPING.relative_accuracy, count=acc.count, errors=acc.errors, rows=acc.rows,
                sum_ms=acc.sum, min_ms=acc.min, max_ms=acc.max, zero_count=acc.zeros, bin_keys=tuple(keys),
                bin_counts=tuple(acc.bins[k] for k in keys),
            )  # fmt: skip
            count = acc.count

            def delivered(err: KafkaError | None, _msg: Message, count: int = count) -> None:
                if err is not None:
                    producer.count_dropped("delivery_failed", count)
                    return
                with self._lock:
                    self.sketches_sent += 1
                self._sent_metric.inc()
                producer.count_sent(count)

            try:
                producer.produce_record(self.topic, record, delivered)
            except BufferError:
                producer.count_dropped("buffer_full", count)
            except Exception:  # noqa: BLE001 - never raise into the service
                producer.count_dropped("produce_error", count)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
