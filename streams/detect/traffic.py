"""Error-rate and surge alerts on the closed windows the worker emits (pure).

Both read the context rows of the windows topic (fingerprint null), of the window kinds the
latency detector judges (``DBOPT_DETECT_WINDOW_KINDS``, tumbling by default), and use its
hysteresis (``DBOPT_DETECT_FIRE_AFTER`` / ``DBOPT_DETECT_RESOLVE_AFTER`` windows).

* ``errors``, per (window kind, service, context): the window's error share (errors / count) is
  above ``DBOPT_ALERT_ERROR_SHARE_CRITICAL`` (2 %) for a critical context, ``DBOPT_ALERT_ERROR_SHARE``
  (5 %) for any other, with at least ``DBOPT_ALERT_ERROR_MIN_ERRORS`` (5) failed statements. A
  window with fewer than ``DBOPT_ALERT_ERROR_MIN_EVENTS`` (20) statements is neutral.
* ``surge``, per (window kind, service): the service's events in a window (the sum of its context
  rows) are at least ``DBOPT_ALERT_SURGE_FACTOR`` (4) x its baseline, the median of its last
  ``DBOPT_ALERT_SURGE_BASELINE_WINDOWS`` (30) non-surging windows, and at least
  ``DBOPT_ALERT_SURGE_MIN_EVENTS`` (100); judged once ``DBOPT_ALERT_SURGE_BASELINE_MIN_WINDOWS`` (5)
  exist. The worker emits every row of a window before any row of a later one and keys rows by
  service, so a service's window is complete when a row of a later window arrives: it is judged
  then (one window late). Surging windows stay out of the baseline; the alert notes the season.

Replay safety as in the latency detector: an errors series ignores a window starting at or before
the newest one it applied; a surge series remembers the contexts it added to the open window and
the newest window it judged. Alert ids hash kind, service, context, state and the causing window.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping

from streams.config import Settings
from streams.detect import hysteresis
from streams.detect.detector import severity
from streams.domain.slo import season
from streams.domain.vocabulary import CRITICALITIES
from streams.records import Alert, WindowStats


@dataclass
class TrafficChange:
    """What one window changes: new state per key (store after sending) and the alerts (send first)."""

    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)


def _database(window: WindowStats) -> list[str]:
    return [] if window.database is None else [window.database]  # several databases: one series each


def errors_key(window: WindowStats) -> str:
    return json.dumps(["errors", window.window_kind, window.service, window.context, *_database(window)])


def surge_key(window: WindowStats) -> str:
    return json.dumps(["surge", window.window_kind, window.service, *_database(window)])


def _most_critical(a: str, b: str) -> str:
    rank: dict[str, int] = {c: i for i, c in enumerate(CRITICALITIES)}
    return min(a, b, key=lambda c: rank.get(c, len(rank)))


class TrafficDetector:
    """Judges windows; the caller keeps the state (``state`` maps keys to JSON-able dicts)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = settings.alert_rules
        self.detect = settings.detect

    def evaluate(self, window: WindowStats, state: Mapping[str, Any], now_ms: int) -> TrafficChange:
        outcome = TrafficChange()
        if window.fingerprint is not None or window.window_kind not in self.detect.window_kinds:
            return outcome
        self._errors(window, state.get(errors_key(window)), now_ms, outcome)
        self._surge(window, state.get(surge_key(window)), now_ms, outcome)
        return outcome

    def _step(self, condition: dict[str, Any], breach: bool | None) -> tuple[dict[str, Any], hysteresis.Change | None]:
        return hysteresis.step(condition, breach, self.detect.fire_after, self.detect.resolve_after)

    # -- errors --------------------------------------------------------------------------------

    def _errors(self, window: WindowStats, previous: dict[str, Any] | None, now_ms: int, outcome: TrafficChange) -> None:
        if previous is not None and window.window_start <= previous["last_start"]:
            return
        condition = previous["condition"] if previous else hysteresis.fresh()
        limit = self.rules.error_share_critical if window.criticality == "critical" else self.rules.error_share
        share = window.errors / window.count if window.count else 0.0
        breach = None
        if window.count >= self.rules.error_min_events:
            breach = share > limit and window.errors >= self.rules.error_min_errors
        condition, change = self._step(condition, breach)
        if change == "firing":
            condition = {**condition, "severity": severity(window.criticality, share, limit)}
        outcome.state[errors_key(window)] = {"last_start": window.window_start, "condition": condition}
        if change is None:
            return
        verb = "above" if change == "firing" else "back under"
        message = (f"{window.service} {window.context}: {window.errors} of {window.count} statements failed "
                   f"({share:.1%}), {verb} the limit of {limit:.1%}")
        outcome.alerts.append(self._alert(
            "errors", change, condition["severity"], window, window.context, window.window_id, share, limit, None,
            "error_share", message, now_ms,
        ))

    # -- surge ---------------------------------------------------------------------------------

    def _surge(self, window: WindowStats, previous: dict[str, Any] | None, now_ms: int, outcome: TrafficChange) -> None:
        series = previous or {"open": None, "judged": None, "baseline": [], "condition": hysteresis.fresh()}
        open_ = series["open"]
        if series["judged"] is not None and window.window_start <= series["judged"]:
            return  # a window already judged (replayed, or late)
        if open_ is not None and window.window_start < open_["start"]:
            return
        if open_ is not None and window.window_start == open_["start"]:
            if window.context in open_["contexts"]:
                return  # the same row again
            criticality = _most_critical(open_["criticality"], window.criticality)
            open_ = {
                **open_, "count": open_["count"] + window.count, "contexts": [*open_["contexts"], window.context],
                "criticality": criticality,
                "context": open_["context"] if criticality == open_["criticality"] else window.context,
            }
            outcome.state[surge_key(window)] = {**series, "open": open_}
            return
        if open_ is not None:  # a later window started: the open one is complete
            series = self._judge(window, series, open_, now_ms, outcome)
        new_open = {"start": window.window_start, "end": window.window_end, "count": window.count,
                    "contexts": [window.context], "criticality": window.criticality, "context": window.context}
        outcome.state[surge_key(window)] = {**series, "open": new_open}

    def _judge(
        self, window: WindowStats, series: dict[str, Any], done: dict[str, Any], now_ms: int, outcome: TrafficChange
    ) -> dict[str, Any]:
        rules = self.rules
        baseline: list[int] = series["baseline"]
        base = statistics.median(baseline) if len(baseline) >= rules.surge_baseline_min_windows else None
        limit = rules.surge_factor * base if base is not None else None
        breach = None if limit is None else done["count"] >= limit and done["count"] >= rules.surge_min_events
        if not breach:
            baseline = [*baseline, done["count"]][-rules.surge_baseline_windows :]
        condition, change = self._step(series["condition"], breach)
        if change is not None:
            assert base is not None and limit is not None
            if change == "firing":
                condition = {**condition, "severity": severity(done["criticality"], done["count"], limit)}
            when = season(done["start"], self.settings.timezone)
            minutes = max(1.0, (done["end"] - done["start"]) / 60_000)
            verb = "surging at" if change == "firing" else "back to"
            message = (f"{window.service}: {done['count']:,} events in the window ({done['count'] / minutes:,.0f}/min), "
                       f"{verb} {done['count'] / base:.1f}x its baseline of {base:,.0f} (limit {rules.surge_factor:g}x; "
                       f"{when} season)")
            window_id = f"{window.window_kind}:{done['start']}:{done['end']}:{window.service}"
            done_window = WindowStats(
                window_id=window_id, window_kind=window.window_kind, window_start=done["start"], window_end=done["end"],
                service=window.service, context=done["context"], criticality=done["criticality"],
                count=done["count"], errors=0, min_ms=0.0, max_ms=0.0, p50_ms=0.0, p95_ms=0.0, p99_ms=0.0,
                database=window.database,
            )
            outcome.alerts.append(self._alert(
                "surge", change, condition["severity"], done_window, done["context"], window_id,
                float(done["count"]), limit, float(base), "events_per_window", message, now_ms,
            ))
        return {**series, "judged": done["start"], "baseline": baseline, "condition": condition}

    # -- the record ----------------------------------------------------------------------------

    def _alert(
        self, kind: str, state: hysteresis.Change, level: str, window: WindowStats, context: str, cause: str,
        value: float, limit: float, baseline: float | None, metric: str, message: str, now_ms: int,
    ) -> Alert:
        return Alert(
            alert_id=hysteresis.alert_id(kind, window.service, context, None, state, cause),
            state=state,
            severity=level,  # type: ignore[arg-type]
            kind=kind,  # type: ignore[arg-type]
            service=window.service,
            context=context,
            p95_ms=float(value),
            threshold_ms=float(limit),
            baseline_ms=baseline,
            window_start=window.window_start,
            window_end=window.window_end,
            message=message,
            created_at=now_ms,
            metric=metric,
            season=season(window.window_start, self.settings.timezone),
            database=window.database,
        )
