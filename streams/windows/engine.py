"""The window state machine of ONE source partition, over a key-value store (pure, no I/O).

Per partition the store holds:

* one *clock* entry: the watermark (max event time seen, or moved by an idle tick), the
  horizon (every window ending at or before it has been emitted), the highest source offset
  judged, and the recent horizon moves with the offset they followed (so a replayed event is
  judged late or on time exactly as it was the first time, see :meth:`PartitionWindows.apply`);
* *pane* entries: :class:`PaneStats` of one key for one pane, with the last source offset applied;
* *cap* entries: the fingerprints admitted per service (the rest aggregate under ``other``).

The caller (the Faust agent) drives it: :meth:`apply` each accepted event, :meth:`tick` on an
idle tick; when either returns True a close is due: :meth:`flush`, emit every record of
:meth:`closing`, wait until the broker has them, then :meth:`commit_close`. Emitting before the
horizon is stored means a crash can repeat an emission (same ``window_id``) but never lose one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Protocol

from streams.config import WindowSettings
from streams.ingest import Accepted, FingerprintCap, Rejected
from streams.records import WindowStats
from streams.windows.aggregate import PaneStats, StatsKey, window_stats
from streams.windows.panes import Window, WindowSpec

Outcome = Literal["applied", "late", "replayed"]


class Store(Protocol):
    """The table of one worker; keys of every partition are prefixed with the partition."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterable[str]: ...


# horizon moves remembered per partition: enough to judge every event replayed after a crash
# (the commit lags the state by seconds, a move happens at most once per window end)
CLOSES_KEPT = 200


@dataclass
class Clock:
    watermark: int | None = None
    horizon: int | None = None
    seen: int = -1  # highest source offset judged (applied, replayed or late)
    closes: list[tuple[int, int]] = field(default_factory=list)  # (seen when the horizon moved, new horizon)

    def horizon_at(self, offset: int) -> int | None:
        """The horizon the event at ``offset`` was judged against when it was first processed
        (None: before the first move, or older than the moves remembered)."""
        before = [h for seen, h in self.closes if seen < offset]
        return max(before) if before else None


@dataclass(frozen=True)
class Closing:
    """Windows due at a new horizon: the records to emit and the pane entries they retire."""

    horizon: int
    records: list[WindowStats]
    retired: list[str]


def _key(*parts: Any) -> str:
    return json.dumps(parts, separators=(",", ":"))


def late(event_time: int, state: PartitionWindows, settings: WindowSettings) -> Rejected:
    """The DLQ verdict of a late event: reason ``late``, how late, and the settings that made it so."""
    clock, spec = state.clock, state.spec
    closed = spec.first_close(event_time)
    behind = (clock.watermark or event_time) - event_time
    return Rejected(
        "late",
        f"late_by_ms={behind}: event_time {event_time} is {behind} ms behind partition {state.partition}'s "
        f"watermark {clock.watermark}; its window ending {closed} was already emitted (horizon {clock.horizon}; "
        f"grace {settings.grace_ms} ms, allowed lateness {settings.allowed_lateness_ms} ms)",
    )


class PartitionWindows:
    def __init__(self, partition: int, spec: WindowSpec, store: Store, max_fingerprints: int) -> None:
        self.partition = partition
        self.spec = spec
        self.store = store
        self.max_fingerprints = max_fingerprints
        self._prefix = f"[{partition},"
        self._clock_key = _key(partition, "clock")
        raw = store.get(self._clock_key)
        self.clock = (
            Clock(raw["wm"], raw["h"], raw.get("seen", -1), [(s, h) for s, h in raw.get("closes", ())])
            if raw else Clock()
        )
        self._clock_dirty = False
        self._panes: dict[str, PaneStats] = {}  # working set, written back by flush()
        self._caps: dict[str, FingerprintCap] = {}
        self._dirty_caps: set[str] = set()
        self._pending: int | None = None  # horizon a close is due for
        self.overflowed: dict[str, int] = {}  # service -> events folded into "other"

    # --- events and ticks -------------------------------------------------------------------

    def apply(self, accepted: Accepted, offset: int) -> tuple[Outcome, bool]:
        """Add one accepted event (source ``offset``): its outcome, and whether a close is due.

        ``late``: a window holding the event was already emitted; the event joins none (the caller
        dead-letters it). An event replayed after a crash (``offset`` at or below the highest judged)
        gets the verdict it got the first time: late again (the caller's dead letter repeats, same
        source offset), or ``replayed`` when it is already inside an emitted window.
        Events of fingerprints over the per-service cap are counted in :attr:`overflowed`.
        """
        event_time = accepted.event.event_time
        clock = self.clock
        if offset <= clock.seen:
            first = clock.horizon_at(offset)
            if first is not None and self.spec.is_late(event_time, first):
                return "late", False
            if clock.horizon is not None and self.spec.is_late(event_time, clock.horizon):
                return "replayed", False
        elif clock.horizon is not None and self.spec.is_late(event_time, clock.horizon):
            self._judged(offset)
            return "late", False
        self._judged(offset)
        accepted = self._capped(accepted)
        event = accepted.event
        assert event.fingerprint is not None  # validate() always fills it in
        pane = self.spec.pane_start(event_time)
        outcome: Outcome = "replayed"
        for key in (StatsKey("q", event.service, event.fingerprint), StatsKey("c", event.service, accepted.context)):
            stats = self._pane(self._pane_key(key, pane))
            if stats.offset < offset:
                stats.add(event, accepted.context, accepted.criticality, offset)
                outcome = "applied"
        return outcome, self._advance(event_time)

    def tick(self, wall_ms: int, allowed_lateness_ms: int) -> bool:
        """An idle tick: move the watermark of a partition that has state to ``wall - allowed lateness``
        (``DBOPT_WINDOW_ALLOWED_LATENESS_MS``): an event older than that arriving later is late."""
        if self.clock.watermark is None:
            return False  # nothing to close; do not make future events of a fresh partition late
        return self._advance(wall_ms - allowed_lateness_ms)

    # --- closing ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the working set back to the store."""
        for key, stats in self._panes.items():
            self.store.put(key, stats.to_dict())
        self._panes.clear()
        for service in self._dirty_caps:
            self.store.put(self._cap_key(service), {"known": sorted(self._caps[service].known)})
        self._dirty_caps.clear()
        if self._clock_dirty:
            self._put_clock()

    def closing(self, emitted_at: int) -> Closing | None:
        """Records of every window that closes at the pending horizon (call after :meth:`flush`)."""
        if self._pending is None:
            return None
        old, new = self.clock.horizon, self._pending
        assert old is not None
        windows = list(self.spec.closing(old, new))
        panes: dict[StatsKey, dict[int, PaneStats]] = {}
        retired = []
        for raw_key in self.store.keys():  # noqa: SIM118 - a Store is not a dict: keys() is its only iteration
            if not raw_key.startswith(self._prefix):
                continue
            parts = json.loads(raw_key)
            if parts[1] != "pane":
                continue
            _, _, kind, service, name, start = parts
            value = self.store.get(raw_key)
            if value is None:
                continue
            panes.setdefault(StatsKey(kind, service, name), {})[start] = PaneStats.from_dict(value)
            if self.spec.last_close(start) <= new:
                retired.append(raw_key)
        records = []
        for window in windows:
            for key, by_start in panes.items():
                merged = self._merge(window, by_start)
                if merged is not None:
                    records.append(window_stats(window, key, merged, emitted_at))
        return Closing(new, records, retired)

    def commit_close(self, closing: Closing) -> None:
        """Store the new horizon, then drop the panes no open window needs."""
        self.clock.horizon = closing.horizon
        self._moved(closing.horizon)
        self._pending = None
        self._put_clock()
        for key in closing.retired:
            self.store.delete(key)

    # --- internals --------------------------------------------------------------------------

    def _advance(self, watermark: int) -> bool:
        clock = self.clock
        if clock.watermark is not None and watermark <= clock.watermark:
            return False
        clock.watermark = watermark
        self._clock_dirty = True
        horizon = self.spec.horizon(watermark)
        if clock.horizon is None:
            clock.horizon = horizon  # first event: no window can hold data yet
            self._moved(horizon)
            return False
        if horizon <= (self._pending if self._pending is not None else clock.horizon):
            return False
        if next(self.spec.closing(clock.horizon, horizon), None) is None:
            clock.horizon = horizon  # no window ends in between: nothing to emit or retire
            return False
        self._pending = horizon
        return True

    def _merge(self, window: Window, by_start: dict[int, PaneStats]) -> PaneStats | None:
        merged: PaneStats | None = None
        for start in self.spec.panes(window):
            stats = by_start.get(start)
            if stats is None:
                continue
            if merged is None:
                merged = PaneStats.from_dict(stats.to_dict())
            else:
                merged.merge(stats)
        return merged

    def _capped(self, accepted: Accepted) -> Accepted:
        service = accepted.event.service
        cap = self._caps.get(service)
        if cap is None:
            raw = self.store.get(self._cap_key(service))
            cap = self._caps[service] = FingerprintCap(self.max_fingerprints, set(raw["known"]) if raw else set())
        accepted, outcome = cap.admit(accepted)
        if outcome == "added":
            self._dirty_caps.add(service)
        elif outcome == "overflow":
            self.overflowed[service] = self.overflowed.get(service, 0) + 1
        return accepted

    def _pane(self, key: str) -> PaneStats:
        stats = self._panes.get(key)
        if stats is None:
            raw = self.store.get(key)
            stats = self._panes[key] = PaneStats.from_dict(raw) if raw else PaneStats()
        return stats

    def _pane_key(self, key: StatsKey, pane_start: int) -> str:
        return _key(self.partition, "pane", key.kind, key.service, key.name, pane_start)

    def _cap_key(self, service: str) -> str:
        return _key(self.partition, "cap", service)

    def _judged(self, offset: int) -> None:
        if offset > self.clock.seen:
            self.clock.seen = offset
            self._clock_dirty = True

    def _moved(self, horizon: int) -> None:
        """Remember that events after the highest judged offset meet ``horizon`` (or a later one)."""
        self.clock.closes = [*self.clock.closes[-(CLOSES_KEPT - 1):], (self.clock.seen, horizon)]

    def _put_clock(self) -> None:
        clock = self.clock
        self.store.put(self._clock_key, {"wm": clock.watermark, "h": clock.horizon, "seen": clock.seen,
                                         "closes": [list(c) for c in clock.closes]})
        self._clock_dirty = False
