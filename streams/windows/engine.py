"""The windows of ONE source partition, in memory, with a changelog (pure, no I/O).

Two inputs feed a partition: the query-events topic (one execution per record, source
:data:`EVENTS`) and the statement-sketches topic (many executions per record, source
:data:`SKETCHES`), co-partitioned: partition ``p`` of both holds the same services. State:

* the *clock*: per source the largest event time seen (its *mark*); the watermark (see below, or
  moved by an idle tick); the horizon (watermark - grace: a window ending at or before it is
  closed, a record for it is late); the emitted horizon (windows ending at or before it were
  emitted and acknowledged); the highest offset judged per source; and the recent horizon moves
  with the offsets they followed (so a replayed record is judged late or on time exactly as it
  was the first time);
* *panes* per source, pane start and key ``(service, fingerprint, context, database)``:
  :class:`PaneStats` with the last source offset applied;
* the latest *statement* of every key (descriptive fields of its windows);
* the *caps*: fingerprints admitted per service (the rest aggregate under ``other``).

**Two inputs, one watermark.** The watermark is the lowest mark of the sources that *hold* it
(:meth:`hold`): a source holds while it has unread records, and while it has data and is not
quiet. So when one topic is read ahead of the other (a backlog after a restart, a fetch that
returns minutes of sparse outlier events at once) the watermark waits for the slower one, and
no sketch is judged late because the events topic happened to be read first. With no source
holding, it is the highest mark.

The caller (:mod:`streams.windows.agent`) feeds records (:meth:`add`, :meth:`add_sketch`) and
ticks (:meth:`tick`); when a close is :attr:`due` it emits the records of :meth:`closing`. Every
commit interval it writes :meth:`checkpoint`'s changelog records, waits until the broker has
everything produced so far, and only then commits the source offsets. A restart (or a partition
moving to another worker) rebuilds the state with :meth:`load` from the changelog partition.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from streams.config import WindowSettings
from streams.ingest import OTHER_FINGERPRINT, Rejected
from streams.ingest.reader import Execution, Statement, shared_statement
from streams.ingest.sketches import SketchInput
from streams.records import WindowStats
from streams.windows.aggregate import KeyKind, PaneKey, PaneStats, StatsKey, window_stats
from streams.windows.panes import Window, WindowSpec
from streams.windows.sketch import MAPPING

Disposition = Literal["applied", "late", "replayed"]
EVENTS, SKETCHES = 0, 1
SOURCES = (EVENTS, SKETCHES)
NO_TIME = -(2**62)  # watermark before the first record
NO_LIMIT = 2**62
# horizon moves remembered per partition: enough to judge every record replayed after a crash
# (the commit lags the state by seconds, a move happens at most once per window end)
CLOSES_KEPT = 200

_CLOCK = b"c"
_PANE = b"p"
_STATEMENT = b"s"
_CAP = b"k"
_ceil, _log2, _BINS_PER_DOUBLING = math.ceil, math.log2, MAPPING.multiplier
_EMPTY: dict[PaneKey, PaneStats | bytes] = {}  # never written
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.decode


@dataclass
class Clock:
    watermark: int = NO_TIME
    marks: list[int] = field(default_factory=lambda: [NO_TIME, NO_TIME])  # largest event time per source
    horizon: int | None = None  # None: no record yet
    emitted: int | None = None
    seen: list[int] = field(default_factory=lambda: [-1, -1])  # highest offset judged, per source
    # (seen per source when the horizon moved, the new horizon)
    closes: list[tuple[int, int, int]] = field(default_factory=list)

    def horizon_at(self, source: int, offset: int) -> int | None:
        """The horizon the record at ``offset`` of ``source`` was judged against when it was
        first processed (None: before the first move, or older than the moves remembered)."""
        before = [move[2] for move in self.closes if move[source] < offset]
        return max(before) if before else None


@dataclass(frozen=True)
class Closing:
    """Windows due at the horizon: the records to emit, made one at a time as they are taken
    (a window of many keys never builds all its records at once). Taking the last one retires
    the panes no open window needs; the caller takes them all."""

    horizon: int
    records: Iterator[WindowStats]


def late(event_time: int, state: PartitionWindows, settings: WindowSettings) -> Rejected:
    """The DLQ verdict of a late record: reason ``late``, how late, and the settings that made it so."""
    clock, spec = state.clock, state.spec
    closed = spec.first_close(event_time)
    watermark = clock.watermark if clock.watermark != NO_TIME else event_time
    behind = watermark - event_time
    return Rejected(
        "late",
        f"late_by_ms={behind}: event_time {event_time} is {behind} ms behind partition {state.partition}'s "
        f"watermark {watermark}; its window ending {closed} was already emitted (horizon {clock.horizon}; "
        f"grace {settings.grace_ms} ms, allowed lateness {settings.allowed_lateness_ms} ms)",
    )


class PartitionWindows:
    def __init__(self, partition: int, spec: WindowSpec, max_fingerprints: int,
                 databases: frozenset[str] = frozenset()) -> None:  # fmt: skip
        """``databases``: the DBOPT_DATABASES names; a record naming another database (or none)
        counts for the default one, so its windows carry ``database`` None."""
        self.partition = partition
        self.spec = spec
        self.max_fingerprints = max_fingerprints
        self.databases = databases
        self.clock = Clock()
        # per source: pane start -> key -> pane; a pane outside the newest start of its source is kept
        # encoded (its changelog value) once checkpointed, and decoded again when a record reaches it
        self.panes: tuple[dict[int, dict[PaneKey, PaneStats | bytes]], ...] = ({}, {})
        self._warm: tuple[set[int], set[int]] = (set(), set())  # per source: starts with decoded panes
        self._keys: dict[PaneKey, PaneKey] = {}  # one tuple per key, shared by its panes
        self._starts: dict[int, int] = {}
        self.statements: dict[PaneKey, Statement] = {}
        self.caps: dict[str, set[str]] = {}
        self.overflowed: dict[str, int] = {}  # service -> records folded into "other"
        self._dirty: set[PaneStats] = set()
        self._cooling: dict[PaneStats, bytes] = {}  # the panes the last checkpoint wrote, and their values
        self._dirty_statements: set[PaneKey] = set()
        self._dirty_caps: set[str] = set()
        self._others: dict[Statement, Statement] = {}
        self._unacked: list[tuple[int, list[bytes]]] = []  # closes emitted since the last checkpoint
        self._retired: list[tuple[bytes, bytes]] = []  # last values of panes and statements retired while dirty
        self._produced: list[tuple[int, list[bytes]]] = []  # closes emitted before it: acknowledged now
        self._stored_emitted: int | None = None  # the emitted horizon whose records are acknowledged
        self._stored_clock = _encode((NO_TIME, [NO_TIME, NO_TIME], None, None, [-1, -1], []))  # as last written
        self.holds = [False, False]  # per source: does the watermark wait for it (see hold())
        self._pane_ms = spec.pane_ms
        self._grace = spec.grace_ms
        self._late_before = NO_TIME  # a record earlier than this is late
        self._next_end = NO_TIME  # the horizon crossing this closes windows

    # --- records and ticks ------------------------------------------------------------------

    def add(self, execution: Execution, offset: int) -> Disposition:
        """One accepted execution of the events topic at ``offset``.

        ``late``: a window holding it was already emitted; it joins none (the caller dead-letters
        it). A record replayed after a crash (``offset`` at or below the highest judged) gets the
        verdict it got the first time: late again (the dead letter repeats, same source offset),
        or ``replayed`` when it is inside an emitted window or its pane has it already.
        """
        event_time = execution.event_time
        clock = self.clock
        seen = clock.seen
        if offset <= seen[EVENTS]:
            verdict = self._replay_verdict(EVENTS, offset, event_time)
            if verdict is not None:
                return verdict
        else:
            seen[EVENTS] = offset
            if event_time < self._late_before:
                return "late"
        statement = execution.statement
        service = execution.service
        known = self.caps.get(service)
        if known is None or statement.fingerprint not in known:
            statement = self._admit(service, statement)
        database = execution.database
        if database is not None and database not in self.databases:
            database = None
        key = (service, statement.fingerprint, statement.context, database)
        start = event_time - event_time % self._pane_ms
        stats = self.panes[EVENTS].get(start, _EMPTY).get(key)
        if not isinstance(stats, PaneStats):  # new, or kept encoded
            stats = self._open_pane(EVENTS, start, key, stats)
        outcome: Disposition = "replayed"
        if stats.offset < offset:
            # QuantileSketch.add and PaneStats totals, inlined: this runs once per execution
            duration = execution.duration_ms
            if duration > 0:
                bin_key = _ceil(_log2(duration) * _BINS_PER_DOUBLING)  # MAPPING.key(duration)
                bins = stats.bins
                bins[bin_key] = bins.get(bin_key, 0) + 1
            else:
                stats.zeros += 1
            stats.count += 1
            if duration < stats.min:
                stats.min = duration
            if duration > stats.max:
                stats.max = duration
            stats.sum_ms += duration
            if execution.error:
                stats.errors += 1
            if execution.rows > 0:
                stats.rows += execution.rows
            stats.offset = offset
            self._dirty.add(stats)
            outcome = "applied"
        if stats.statement is not statement:
            self._set_statement(stats, statement)
        marks = clock.marks
        if event_time > marks[EVENTS]:
            marks[EVENTS] = event_time
            self.holds[EVENTS] = True
            other = marks[SKETCHES] if self.holds[SKETCHES] else NO_LIMIT
            watermark = event_time if event_time < other else other
            if watermark > clock.watermark:
                self._advance(watermark)
        return outcome

    def add_sketch(self, sketch: SketchInput, offset: int) -> Disposition:
        """One accepted StatementSketch of the sketches topic at ``offset`` (verdicts as :meth:`add`)."""
        start = sketch.interval_start
        clock = self.clock
        if offset <= clock.seen[SKETCHES]:
            verdict = self._replay_verdict(SKETCHES, offset, start)
            if verdict is not None:
                return verdict
        else:
            clock.seen[SKETCHES] = offset
            if start < self._late_before:
                return "late"
        statement = sketch.statement
        known = self.caps.get(sketch.service)
        if known is None or statement.fingerprint not in known:
            statement = self._admit(sketch.service, statement, sketch.count)
        database = sketch.database if sketch.database in self.databases else None
        key = (sketch.service, statement.fingerprint, statement.context, database)
        pane = start - start % self._pane_ms
        stats = self.panes[SKETCHES].get(pane, _EMPTY).get(key)
        if not isinstance(stats, PaneStats):
            stats = self._open_pane(SKETCHES, pane, key, stats)
        outcome: Disposition = "replayed"
        if stats.offset < offset:
            stats.add_sketch(sketch.keys, sketch.counts, sketch.zeros, sketch.count, sketch.errors, sketch.rows,
                             sketch.sum_ms, sketch.min_ms, sketch.max_ms, offset)  # fmt: skip
            self._dirty.add(stats)
            outcome = "applied"
        if stats.statement is not statement:
            self._set_statement(stats, statement)
        if sketch.last_event_time > clock.marks[SKETCHES]:
            clock.marks[SKETCHES] = sketch.last_event_time
            self.holds[SKETCHES] = True
            self._rewatermark()
        return outcome

    def hold(self, source: int, holding: bool) -> None:
        """Whether the watermark waits for ``source`` (the caller knows its backlog and its quiet)."""
        if self.holds[source] != holding:
            self.holds[source] = holding
            self._rewatermark()

    def tick(self, wall_ms: int, allowed_lateness_ms: int) -> None:
        """An idle tick: move the watermark of a partition that has state to ``wall - allowed
        lateness`` (``DBOPT_WINDOW_ALLOWED_LATENESS_MS``): a record older than that arriving
        later is late."""
        if max(self.clock.marks) == NO_TIME:
            return  # nothing to close; do not make the first records of a fresh partition late
        if wall_ms - allowed_lateness_ms > self.clock.watermark:
            self._advance(wall_ms - allowed_lateness_ms)

    # --- closing ----------------------------------------------------------------------------

    @property
    def due(self) -> bool:
        """Some window ends between the emitted horizon and the horizon: :meth:`closing` emits it."""
        clock = self.clock
        if clock.emitted is None or clock.horizon is None or clock.horizon <= clock.emitted:
            return False
        return next(self.spec.closing(clock.emitted, clock.horizon), None) is not None

    def closing(self, emitted_at: int) -> Closing | None:
        """The records of every window ending in (emitted horizon, horizon]. The caller produces
        them; the panes no open window needs leave memory now and the changelog at the checkpoint
        after the one that follows (when the records are surely acknowledged)."""
        clock = self.clock
        if not self.due:
            if clock.horizon is not None:
                clock.emitted = clock.horizon
            return None
        assert clock.emitted is not None and clock.horizon is not None
        windows = list(self.spec.closing(clock.emitted, clock.horizon))
        clock.emitted = clock.horizon
        return Closing(clock.horizon, self._records(windows, clock.horizon, emitted_at))

    def _records(self, windows: list[Window], horizon: int, emitted_at: int) -> Iterator[WindowStats]:
        for window in windows:
            yield from self._window_records(window, emitted_at)
        self._unacked.append((horizon, self._retire(horizon)))

    def checkpoint(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records to write now, in order: the changed panes, statements and caps,
        the clock, then the deletions of panes retired by closes whose records the previous
        checkpoint's flush acknowledged. The caller produces them to changelog partition
        :attr:`partition`, then waits for the broker's acknowledgement of everything produced
        before committing source offsets (and before the next checkpoint)."""
        acked, self._produced, self._unacked = self._produced, self._unacked, []
        if acked:
            self._stored_emitted = max(horizon for horizon, _ in acked)
        if not self._produced:  # every close emitted so far is acknowledged
            self._stored_emitted = self.clock.emitted
        written = {stats: stats.encode() for stats in self._dirty}
        out: list[tuple[bytes, bytes | None]] = [*self._retired, *((_pane_key(s), v) for s, v in written.items())]
        self._retired.clear()
        self._dirty.clear()
        self._freeze(written)
        out += [(_STATEMENT + _encode(k), _encode(_statement_tuple(self.statements[k])))
                for k in self._dirty_statements if k in self.statements]  # fmt: skip
        self._dirty_statements.clear()
        out += [(_CAP + service.encode(), _encode(sorted(self.caps[service]))) for service in self._dirty_caps]
        self._dirty_caps.clear()
        clock = self.clock
        stored = _encode((clock.watermark, clock.marks, clock.horizon, self._stored_emitted, clock.seen, clock.closes))
        if stored != self._stored_clock:  # an idle partition writes nothing
            out.append((_CLOCK, stored))
            self._stored_clock = stored
        for _, deleted in acked:
            out += [(key, None) for key in deleted]
        return out

    def _freeze(self, written: dict[PaneStats, bytes]) -> None:
        """Keep the panes outside each source's newest pane start encoded (memory: about a tenth),
        and those of the newest start that no record reached since the previous checkpoint: a
        key seen once a minute holds its pane encoded, a busy key keeps it decoded."""
        for pane, value in self._cooling.items():
            if pane not in written:  # unchanged since that checkpoint wrote ``value``
                bucket = self.panes[pane.source].get(pane.start)
                if bucket is not None and pane.key is not None and bucket.get(pane.key) is pane:
                    bucket[pane.key] = value
        self._cooling = written
        for source, by_start in enumerate(self.panes):
            warm = self._warm[source]
            if not by_start:
                warm.clear()
                continue
            newest = max(by_start)
            for start in warm - {newest}:
                bucket = by_start.get(start)
                for key, stats in (bucket or {}).items():
                    if isinstance(stats, PaneStats):
                        bucket[key] = written.get(stats) or stats.encode()  # type: ignore[index]
            warm &= {newest}

    # --- restore ----------------------------------------------------------------------------

    def load(self, records: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Rebuild the state from the changelog partition's records, oldest first."""
        panes: dict[tuple[int, int, PaneKey], bytes] = {}
        statements: dict[PaneKey, bytes] = {}
        for raw_key, value in records:
            kind, rest = raw_key[:1], raw_key[1:]
            if kind == _PANE:
                source, start, *parts = _decode(rest)
                where = (source, start, _pane_key_tuple(parts))
                if value is None:
                    panes.pop(where, None)
                else:
                    panes[where] = value
            elif kind == _STATEMENT:
                skey = _pane_key_tuple(_decode(rest))
                if value is None:
                    statements.pop(skey, None)
                else:
                    statements[skey] = value
            elif kind == _CAP and value is not None:
                self.caps[rest.decode()] = set(_decode(value))
            elif kind == _CLOCK and value is not None:
                watermark, marks, horizon, emitted, seen, closes = _decode(value)
                self.clock = Clock(watermark, list(marks), horizon, emitted, list(seen), [tuple(c) for c in closes])
        self.statements = {self._keys.setdefault(k, k): _statement(_decode(v)) for k, v in statements.items()}
        for (source, start, key), value in panes.items():  # kept encoded until a record reaches them
            start = self._starts.setdefault(start, start)
            self.panes[source].setdefault(start, {})[self._keys.setdefault(key, key)] = value
        self._stored_emitted = self.clock.emitted
        clock = self.clock
        self._stored_clock = _encode((clock.watermark, clock.marks, clock.horizon, clock.emitted, clock.seen,
                                      clock.closes))  # fmt: skip
        self.holds = [mark != NO_TIME for mark in clock.marks]
        if self.clock.horizon is not None:
            self._moved_to(self.clock.horizon)

    # --- internals --------------------------------------------------------------------------

    def _replay_verdict(self, source: int, offset: int, event_time: int) -> Disposition | None:
        clock = self.clock
        first = clock.horizon_at(source, offset)
        if first is not None and self.spec.is_late(event_time, first):
            return "late"
        if clock.horizon is not None and self.spec.is_late(event_time, clock.horizon):
            return "replayed"
        return None

    def _rewatermark(self) -> None:
        marks = self.clock.marks
        held = [marks[source] for source in SOURCES if self.holds[source]]
        watermark = min(held) if held else max(marks)
        if watermark > self.clock.watermark:
            self._advance(watermark)

    def _advance(self, watermark: int) -> None:
        clock = self.clock
        clock.watermark = watermark
        horizon = watermark - self._grace
        if clock.horizon is None:  # the first watermark: only windows that may hold data are still to emit
            # (records may already be in panes: the watermark waited for the other input)
            earliest = min((start for by_start in self.panes for start in by_start), default=horizon)
            clock.horizon, clock.emitted = horizon, min(horizon, earliest)
            if self._stored_emitted is None:  # nothing emitted below it: acknowledged as it stands (a restore
                self._stored_emitted = clock.emitted  # from the next checkpoint must emit from here again)
            self._record_move(horizon)
        elif horizon >= self._next_end:  # a window end is crossed: verdicts change, windows close
            clock.horizon = horizon
            self._record_move(horizon)
        elif horizon > clock.horizon:
            clock.horizon = horizon

    def _record_move(self, horizon: int) -> None:
        clock = self.clock
        clock.closes.append((clock.seen[EVENTS], clock.seen[SKETCHES], horizon))
        del clock.closes[:-CLOSES_KEPT]
        self._moved_to(horizon)

    def _moved_to(self, horizon: int) -> None:
        spec = self.spec
        self._late_before = max(horizon // spec.tumbling_ms * spec.tumbling_ms, horizon // spec.hop_ms * spec.hop_ms)
        self._next_end = spec.first_close(horizon)

    def _open_pane(self, source: int, start: int, key: PaneKey, stored: bytes | None) -> PaneStats:
        """The pane of ``key`` at ``start`` ready for updates: a new one, or the stored one decoded."""
        canonical = self._keys.get(key)
        if canonical is None:  # a new key: its texts shared with every other key's
            service, fingerprint, context, database = key
            canonical = (sys.intern(service), fingerprint, context, database)
            self._keys[canonical] = canonical  # the key itself, not the caller's equal tuple: one per key
        key = canonical
        start = self._starts.setdefault(start, start)  # one int per pane start, shared by its panes
        bucket = self.panes[source].setdefault(start, {})
        stats = PaneStats() if stored is None else PaneStats.decode(stored)
        stats.source, stats.start, stats.key, stats.statement = source, start, key, self.statements.get(key)
        bucket[key] = stats
        self._warm[source].add(start)
        return stats

    def _decoded(self, source: int, start: int, key: PaneKey, pane: PaneStats | bytes) -> PaneStats:
        """A pane to read (closing): decoded when stored encoded, not kept decoded."""
        if isinstance(pane, PaneStats):
            return pane
        stats = PaneStats.decode(pane)
        stats.source, stats.start, stats.key, stats.statement = source, start, key, self.statements.get(key)
        return stats

    def _set_statement(self, stats: PaneStats, statement: Statement) -> None:
        stats.statement = statement
        assert stats.key is not None
        if self.statements.get(stats.key) is not statement:
            self.statements[stats.key] = statement
            self._dirty_statements.add(stats.key)

    def _admit(self, service: str, statement: Statement, records: int = 1) -> Statement:
        """The statement a record of ``service`` counts under: its own, or ``other`` over the cap."""
        known = self.caps.setdefault(service, set())
        if statement.fingerprint in known:
            return statement
        if len(known) < self.max_fingerprints:
            known.add(statement.fingerprint)
            self._dirty_caps.add(service)
            return statement
        self.overflowed[service] = self.overflowed.get(service, 0) + records
        other = self._others.get(statement)
        if other is None:
            other = self._others[statement] = Statement(OTHER_FINGERPRINT, "", statement.statement_type,
                                                        statement.tables, statement.context, statement.criticality)  # fmt: skip
        return other

    def _window_records(self, window: Window, emitted_at: int) -> Iterator[WindowStats]:
        """The query rows (service, fingerprint) and context rows (service, context) of a window,
        service by service (only one service's panes are decoded and merged at a time). Each key's
        panes are merged once; a row is the merge of its keys' merges (a context row thus merges
        a few sketches of many executions each, not every pane of its statements)."""
        by_service: dict[str, dict[PaneKey, list[tuple[int, int, PaneStats | bytes]]]] = {}
        for source in SOURCES:
            by_start = self.panes[source]
            for start in self.spec.panes(window):
                for key, pane in by_start.get(start, _EMPTY).items():
                    by_service.setdefault(key[0], {}).setdefault(key, []).append((source, start, pane))
        for by_key in by_service.values():
            rows: dict[tuple[KeyKind, str, str, str | None], list[tuple[PaneStats, PaneStats]]] = {}
            for key, stored in by_key.items():
                parts = [self._decoded(source, start, key, pane) for source, start, pane in stored]
                merged = parts[0] if len(parts) == 1 else _merged(parts)
                latest = max(parts, key=_recency)
                service, fingerprint, context, database = key
                rows.setdefault(("q", service, fingerprint, database), []).append((merged, latest))
                rows.setdefault(("c", service, context, database), []).append((merged, latest))
            for row, merges in rows.items():
                merged = merges[0][0] if len(merges) == 1 else _merged([m for m, _ in merges])
                latest = max((last for _, last in merges), key=_recency)
                statement = latest.statement or self.statements[latest.key]  # type: ignore[index]
                yield window_stats(window, StatsKey(*row), merged, statement, emitted_at)

    def _retire(self, horizon: int) -> list[bytes]:
        """Drop the panes every window of which has closed; their changelog keys (and those of
        statements no pane refers to any more)."""
        deleted: list[bytes] = []
        keys: set[PaneKey] = set()
        for source in SOURCES:
            by_start = self.panes[source]
            for start in [s for s in by_start if self.spec.last_close(s) <= horizon]:
                for key, pane in by_start.pop(start).items():
                    if isinstance(pane, PaneStats) and pane in self._dirty:
                        # its last updates still go to the changelog: until this close is acknowledged, a
                        # restore re-emits its windows from there (and replays none of those records)
                        self._dirty.discard(pane)
                        self._retired.append((_pane_key(pane), pane.encode()))
                    deleted.append(_PANE + _encode((source, start, *key)))
                    keys.add(key)
                self._warm[source].discard(start)
        self._starts = {s: s for by_start in self.panes for s in by_start}
        live = {key for by_start in self.panes for bucket in by_start.values() for key in bucket} if keys else set()
        for key in keys - live:
            self._keys.pop(key, None)
            statement = self.statements.pop(key, None)
            if key in self._dirty_statements and statement is not None:  # the same, for its statement
                self._dirty_statements.discard(key)
                self._retired.append((_STATEMENT + _encode(key), _encode(_statement_tuple(statement))))
            deleted.append(_STATEMENT + _encode(key))
        return deleted


def _recency(stats: PaneStats) -> tuple[int, int]:
    """Order of the records applied last: a row's statement is that of its latest record."""
    return stats.offset, stats.source


def _merged(parts: list[PaneStats]) -> PaneStats:
    merged = parts[0].copy()
    for part in parts[1:]:
        merged.merge(part)
    return merged


def _pane_key(stats: PaneStats) -> bytes:
    assert stats.key is not None
    return _PANE + _encode((stats.source, stats.start, *stats.key))


def _pane_key_tuple(parts: list[object]) -> PaneKey:
    service, fingerprint, context, database = parts
    return (str(service), str(fingerprint), str(context), None if database is None else str(database))


def _statement(fields: list[object]) -> Statement:
    """A restored statement, shared and interned as new ones are."""
    fingerprint, text, statement_type, tables, context, criticality = fields
    return shared_statement(str(fingerprint), str(text), str(statement_type), (str(t) for t in tables),  # type: ignore[attr-defined]
                            str(context), str(criticality))  # fmt: skip


def _statement_tuple(statement: Statement) -> tuple[object, ...]:
    return (statement.fingerprint, statement.query_text, statement.statement_type, list(statement.tables),
            statement.context, statement.criticality)  # fmt: skip

