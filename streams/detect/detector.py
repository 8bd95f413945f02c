"""Judge each closed window and turn condition changes into Alert records (pure).

A *series* is one row stream of the windows topic: (window kind, service, context, fingerprint),
the fingerprint being null on context rows. Each series has two conditions:

* ``slo``: the window's p95 is above the context's season-aware p95 SLO (every row);
* ``regression`` (fingerprint rows only): p95 >= ``regression_factor`` x the fingerprint's
  baseline AND above ``regression_floor_ms``. The baseline is the median p95 of its last
  ``baseline_windows`` non-regressing windows, judged only once ``baseline_min_windows`` exist;
  regressing windows are kept out of the baseline so a persisting regression stays visible.

Windows with fewer than ``min_samples`` events are neutral: they neither breach nor count as good,
and leave the series' state as it was (a series that only ever had such windows has none).
Hysteresis: a condition fires after ``fire_after`` consecutive breaching windows and resolves
after ``resolve_after`` consecutive good ones; while firing it never fires again.

Replay safety: the series state remembers the start of the newest window it applied; a window
starting at or before it (the same window emitted again after a crash, or an older one) is
ignored. Alert ids hash the condition, the state and the causing window, so an alert re-sent
after a crash carries the same id.

Severity = criticality x magnitude, magnitude = p95 / threshold:

    ============  =========  ==========  ======
    criticality   < 2x       2x - <5x    >= 5x
    ============  =========  ==========  ======
    critical      high       critical    critical
    high          warning    high        critical
    medium        info       warning     high
    ============  =========  ==========  ======

A resolved alert carries the severity its condition fired with.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, MutableMapping

from streams.config import Settings
from streams.domain.slo import slo_ms
from streams.records import Alert, AlertKind, AlertState, Severity, WindowStats

_SEVERITY: dict[str, tuple[Severity, Severity, Severity]] = {
    "critical": ("high", "critical", "critical"),
    "high": ("warning", "high", "critical"),
    "medium": ("info", "warning", "high"),
}
KINDS: tuple[AlertKind, ...] = ("slo", "regression")


def severity(criticality: str, p95_ms: float, threshold_ms: float) -> Severity:
    ratio = p95_ms / threshold_ms if threshold_ms > 0 else float("inf")
    bucket = 0 if ratio < 2 else 1 if ratio < 5 else 2
    return _SEVERITY.get(criticality, _SEVERITY["medium"])[bucket]


def alert_id(kind: str, service: str, context: str, fingerprint: str | None, state: str, window_id: str) -> str:
    material = json.dumps([kind, service, context, fingerprint, state, window_id])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def series_key(window: WindowStats) -> str:
    extra = [] if window.database is None else [window.database]  # several databases: one series each
    return json.dumps([window.window_kind, window.service, window.context, window.fingerprint, *extra])


def _fresh_state() -> dict[str, Any]:
    condition = {"firing": False, "breaches": 0, "goods": 0, "severity": None}
    return {"last_start": None, "baseline": [], **{kind: dict(condition) for kind in KINDS}}


@dataclass
class SeriesChange:
    """What one window changes: the series' new state (to store) and the alerts (to send first)."""

    key: str
    state: dict[str, Any] | None  # None: the window was ignored, nothing to store
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class _Judgement:
    breach: bool | None  # None: not judged (too few samples, or no baseline yet)
    threshold_ms: float
    baseline_ms: float | None = None


class Detector:
    """Holds series state in ``state`` (a dict, or a Faust table: values are JSON-able and
    only ever replaced, never mutated in place, so every change reaches the changelog)."""

    def __init__(self, settings: Settings, state: MutableMapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.config = settings.detect
        self.state: MutableMapping[str, Any] = {} if state is None else state

    def observe(self, window: WindowStats, now_ms: int) -> list[Alert]:
        """Evaluate and store at once (for callers without a send-before-store requirement)."""
        outcome = self.evaluate(window, now_ms)
        self.apply(outcome)
        return outcome.alerts

    def apply(self, outcome: SeriesChange) -> None:
        if outcome.state is not None:
            self.state[outcome.key] = outcome.state

    def evaluate(self, window: WindowStats, now_ms: int) -> SeriesChange:
        key = series_key(window)
        if window.window_kind not in self.config.window_kinds:
            return SeriesChange(key, None)
        previous = self.state.get(key)
        if previous is not None and previous["last_start"] is not None and window.window_start <= previous["last_start"]:
            return SeriesChange(key, None)
        if window.count < self.config.min_samples:  # neutral: changes nothing, so nothing is stored (a long
            return SeriesChange(key, None)  # tail of rarely run statements keeps no state at all)
        state = json.loads(json.dumps(previous)) if previous is not None else _fresh_state()
        state["last_start"] = window.window_start
        outcome = SeriesChange(key, state)
        judgements: dict[AlertKind, _Judgement] = {"slo": self._slo(window)}
        if window.fingerprint is not None:
            judgements["regression"] = self._regression(window, state["baseline"])
            if not judgements["regression"].breach:
                state["baseline"] = (state["baseline"] + [window.p95_ms])[-self.config.baseline_windows :]
        for kind, judgement in judgements.items():
            change = self._step(state[kind], judgement.breach)
            if change is None:
                continue
            if change == "firing":
                state[kind]["severity"] = severity(window.criticality, window.p95_ms, judgement.threshold_ms)
            outcome.alerts.append(self._alert(kind, change, state[kind]["severity"], window, judgement, now_ms))
        return outcome

    def _slo(self, window: WindowStats) -> _Judgement:
        threshold = slo_ms(window.context, window.window_start, self.settings.domain, self.settings.timezone)
        return _Judgement(window.p95_ms > threshold, threshold)

    def _regression(self, window: WindowStats, baseline: list[float]) -> _Judgement:
        if len(baseline) < self.config.baseline_min_windows:
            return _Judgement(None, self.config.regression_floor_ms)
        base = statistics.median(baseline)
        threshold = max(self.config.regression_factor * base, self.config.regression_floor_ms)
        p95 = window.p95_ms
        breach = p95 >= self.config.regression_factor * base and p95 > self.config.regression_floor_ms
        return _Judgement(breach, threshold, base)

    def _step(self, condition: dict[str, Any], breach: bool | None) -> AlertState | None:
        """Advance one condition's hysteresis; return ``firing``/``resolved`` on a change."""
        if breach is None:
            return None
        if not condition["firing"]:
            condition["breaches"] = condition["breaches"] + 1 if breach else 0
            if condition["breaches"] >= self.config.fire_after:
                condition.update(firing=True, breaches=0, goods=0)
                return "firing"
            return None
        condition["goods"] = 0 if breach else condition["goods"] + 1
        if condition["goods"] >= self.config.resolve_after:
            condition.update(firing=False, breaches=0, goods=0)
            return "resolved"
        return None

    def _alert(
        self, kind: AlertKind, state: AlertState, level: Severity, window: WindowStats, judgement: _Judgement,
        now_ms: int,
    ) -> Alert:
        fingerprint = window.fingerprint
        what = f"{window.service} {window.context}" + (f" query {fingerprint}" if fingerprint else "")
        limit = "SLO" if kind == "slo" else "regression threshold"
        verb = "above" if state == "firing" else "back under"
        return Alert(
            alert_id=alert_id(kind, window.service, window.context, fingerprint, state, window.window_id),
            state=state,
            severity=level,
            kind=kind,
            service=window.service,
            context=window.context,
            fingerprint=fingerprint,
            p95_ms=float(window.p95_ms),
            threshold_ms=float(judgement.threshold_ms),
            baseline_ms=judgement.baseline_ms,
            window_start=window.window_start,
            window_end=window.window_end,
            query_text=window.query_text,
            message=f"{what}: p95 {window.p95_ms:.1f} ms {verb} the {limit} of {judgement.threshold_ms:.1f} ms",
            created_at=now_ms,
            database=window.database,
        )
