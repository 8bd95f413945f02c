"""Wedding-aware sequencing of commands that are due at once (pure, no I/O).

When several commands are due together — a freeze day ends, PostgreSQL comes back after an outage,
a burst of alerts — the executor does not run them in arrival order. It runs them in the seeds'
order, one table at a time:

1. **critical** contexts first (booking, payment, vendor_search, timeline:
   ``DBOPT_EXECUTOR_CRITICAL_CONTEXTS``), each followed by a 60 s stabilization pause;
2. **support** services next (notification, analytics, integration:
   ``DBOPT_EXECUTOR_SUPPORT_SERVICES``, matched on the command's service or context), 30 s;
3. **the rest** last, 15 s.

Within a tier an emergency goes first, then the higher ``priority``, then the older command. The
commands of one table form one *step*; the pause of the step's tier follows it, and before the
next step the latest windows of the contexts the step touched are checked (:func:`settled`): a
context whose latest closed window breaches its p95 SLO holds the sequence (up to a limit) instead
of piling the next change onto a service that has not recovered.

:func:`plan` orders, :class:`Sequencer` remembers where the sequence stands (the pause, the hold);
the executor owns the I/O (reading due rows, running a step, reading windows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from streams.config import ExecutorSettings

TIER_NAMES = ("critical", "support", "rest")


@dataclass(frozen=True)
class Tiers:
    """Which commands belong to which tier, and each tier's stabilization pause (s)."""

    critical_contexts: frozenset[str]
    support_services: tuple[str, ...]
    pauses_s: tuple[float, float, float]

    @classmethod
    def from_settings(cls, cfg: ExecutorSettings) -> Tiers:
        return cls(
            frozenset(cfg.critical_contexts),
            tuple(cfg.support_services),
            (cfg.stabilize_critical_s, cfg.stabilize_support_s, cfg.stabilize_rest_s),
        )

    def tier(self, context: str | None, service: str | None) -> int:
        """0 critical, 1 support, 2 the rest."""
        if context in self.critical_contexts:
            return 0
        names = [n.lower() for n in (service, context) if n]
        if any(name.startswith(stem) for name in names for stem in self.support_services):
            return 1
        return 2


@dataclass(frozen=True)
class Due:
    """A command that may run now, as far as sequencing cares."""

    command_id: str
    table: str | None
    context: str | None  # the command's context, else the one its table classifies as
    service: str | None
    priority: int = 0
    created_at: int = 0
    emergency: bool = False


@dataclass(frozen=True)
class Step:
    """The commands of one table, run back to back, then ``pause_s`` of stabilization."""

    tier: int
    table: str | None
    command_ids: tuple[str, ...]
    contexts: frozenset[str]
    pause_s: float

    @property
    def tier_name(self) -> str:
        return TIER_NAMES[self.tier]


def plan(due: Iterable[Due], tiers: Tiers) -> list[Step]:
    """The due commands as steps, in the order they must run."""

    def rank(item: Due) -> tuple[int, int, int, int, str]:
        return (0 if item.emergency else 1, tiers.tier(item.context, item.service), -item.priority,
                item.created_at, item.command_id)

    by_table: dict[str | None, list[Due]] = {}
    for item in sorted(due, key=rank):
        # a command without a table cannot share a step: it is a table of its own
        by_table.setdefault(item.table if item.table is not None else f"\0{item.command_id}", []).append(item)
    steps = []
    for table, items in by_table.items():  # dicts keep insertion order: the first command's rank
        tier = min(tiers.tier(i.context, i.service) for i in items)
        steps.append(Step(
            tier=tier,
            table=None if table is None or table.startswith("\0") else table,
            command_ids=tuple(i.command_id for i in items),
            contexts=frozenset(i.context for i in items if i.context),
            pause_s=tiers.pauses_s[tier],
        ))
    return steps


@dataclass(frozen=True)
class LatestWindow:
    """The latest closed tumbling window of one (database, service, context)."""

    context: str
    service: str
    window_end: int
    p95_ms: float
    count: int


def settled(contexts: frozenset[str], latest: Iterable[LatestWindow], slo_ms: Callable[[str, int], float],
            min_samples: int) -> tuple[bool, str]:
    """Whether the contexts a step touched look healthy in their latest windows (and why not).

    A window with fewer than ``min_samples`` queries says nothing; no window at all is no evidence
    of harm either, so the sequence goes on."""
    for window in sorted(latest, key=lambda w: (w.context, w.service)):
        if window.context not in contexts or window.count < min_samples:
            continue
        threshold = slo_ms(window.context, window.window_end)
        if window.p95_ms > threshold:
            return False, (f"{window.service}/{window.context} p95 {window.p95_ms:.1f} ms is over its SLO "
                           f"{threshold:.0f} ms in the window ending {window.window_end}")
    return True, "the latest windows of the changed contexts are within their SLOs"


@dataclass
class Sequencer:
    """Where the sequence stands: when the next step may start, and what the last one touched.

    ``hold_max_s`` bounds how long unhealthy windows hold the next step: after that the sequence
    goes on (a breach the last change did not cause must not stop every later change forever)."""

    hold_max_s: float
    next_at: float = 0.0  # monotonic seconds: no step starts before
    last_contexts: frozenset[str] = frozenset()
    held_since: float | None = None
    log: list[str] = field(default_factory=list)  # what the sequencer decided, newest last (bounded)

    def busy(self, now: float) -> bool:
        """A step ran and its pause is not over: new commands queue behind it."""
        return now < self.next_at

    def may_start(self, now: float, latest: Callable[[], Sequence[LatestWindow]],
                  slo_ms: Callable[[str, int], float], min_samples: int) -> tuple[bool, str]:
        """Whether the next step may start now (pause over, the last step's contexts settled);
        ``latest`` reads the latest windows (only called when a step's contexts are to be checked)."""
        if self.busy(now):
            return False, f"stabilization pause: {self.next_at - now:.0f} s left"
        if not self.last_contexts:
            return True, "no step is stabilizing"
        ok, why = settled(self.last_contexts, latest(), slo_ms, min_samples)
        if ok:
            self.held_since = None
            return True, why
        if self.held_since is None:
            self.held_since = now
            self._note(f"holding the sequence: {why}")
        if now - self.held_since >= self.hold_max_s:
            self._note(f"held {self.hold_max_s:.0f} s, going on: {why}")
            self.held_since = None
            self.last_contexts = frozenset()
            return True, f"held for {self.hold_max_s:.0f} s; going on"
        return False, f"holding: {why}"

    def ran(self, step: Step, now: float) -> None:
        """A step finished at ``now``: its pause starts."""
        self.next_at = now + step.pause_s
        self.last_contexts = step.contexts
        self._note(f"ran {step.tier_name} step on {step.table or 'no table'} "
                   f"({len(step.command_ids)} command(s)); pause {step.pause_s:.0f} s")

    def _note(self, text: str) -> None:
        self.log = [*self.log[-49:], text]
