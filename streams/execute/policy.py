"""Whether an allowlisted, catalog-checked command may run now (pure).

Rules, in order:

1. **Aggressiveness** decides which *automatic* actions (origin ``advisor``/``verifier``) apply:
   recommend = none; conservative = ANALYZE, VACUUM; moderate = + CREATE INDEX, REINDEX;
   aggressive = + DROP INDEX. In peak and proposal season ``aggressive`` acts as ``moderate`` (no
   automatic drops while traffic is high). A command an operator submitted is an explicit human
   decision and a rollback (``rollback_of`` set) undoes a change, so aggressiveness never blocks
   those, except at ``recommend``: there dbopt applies nothing by itself, rollbacks included, and
   every automatic command is deferred (with no time to look again) as a recommendation.
   At the other levels a blocked action is rejected: it stays a recommendation for a human.
   :func:`needs_approval` says which commands wait for a person (``dbopt serve`` shows them).
2. **At most N indexes per table** (``DBOPT_MAX_INDEXES_PER_TABLE``, default 10), for everyone.
3. **One operation per table at a time**: a table with a running operation defers the command.
4. **Freeze days** (wedding days, ``DBOPT_FREEZE_WEEKDAYS``): every change is deferred until the
   freeze ends, unless the command is an emergency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.domain.calendar import Calendar

RECOMMEND = "recommend"  # the aggressiveness that applies nothing by itself
AUTO_ACTIONS: dict[str, frozenset[str]] = {
    RECOMMEND: frozenset(),
    "conservative": frozenset({"analyze", "vacuum"}),
    "moderate": frozenset({"analyze", "vacuum", "create_index", "reindex"}),
    "aggressive": frozenset({"analyze", "vacuum", "create_index", "reindex", "drop_index"}),
}
HIGH_TRAFFIC_SEASONS = ("peak", "proposal")
BUSY_RETRY = timedelta(minutes=1)


@dataclass(frozen=True)
class PolicyDecision:
    verdict: str  # "allow" | "reject" | "defer"
    reason: str
    until: datetime | None = None  # defer: when to look again (None: only an operator can unblock it)

    @classmethod
    def allow(cls, reason: str) -> "PolicyDecision":
        return cls("allow", reason)

    @classmethod
    def reject(cls, reason: str) -> "PolicyDecision":
        return cls("reject", reason)

    @classmethod
    def defer(cls, reason: str, until: datetime | None) -> "PolicyDecision":
        return cls("defer", reason, until)


@dataclass(frozen=True)
class Request:
    origin: str
    action: str
    table: str | None
    emergency: bool = False
    is_rollback: bool = False
    index_count: int | None = None  # indexes the table has now (create_index)


def effective_aggressiveness(level: str, season: str) -> str:
    if level == "aggressive" and season in HIGH_TRAFFIC_SEASONS:
        return "moderate"
    return level


def needs_approval(request: Request, aggressiveness: str, season: str) -> str | None:
    """Why ``request`` waits for a person at this aggressiveness and season; None: it may run by itself."""
    if request.origin == "operator":
        return None
    if aggressiveness == RECOMMEND:
        return (f"{request.action} waits for an operator: at aggressiveness recommend dbopt applies nothing by "
                "itself; it is a recommendation: approve it in dbopt serve or submit it with `dbopt command submit`")
    level = effective_aggressiveness(aggressiveness, season)
    if request.is_rollback or request.action in AUTO_ACTIONS[level]:
        return None
    note = "" if level == aggressiveness else f" ({aggressiveness} acts as {level} in {season} season)"
    return (f"{request.action} is not applied automatically at aggressiveness {level}{note}; it stays a "
            "recommendation: an operator can approve it in dbopt serve or submit it with `dbopt command submit`")


def decide(
    request: Request,
    *,
    aggressiveness: str,
    max_indexes_per_table: int,
    busy_tables: frozenset[str],
    calendar: Calendar,
) -> PolicyDecision:
    now = calendar.now()
    season = calendar.season(now)
    level = effective_aggressiveness(aggressiveness, season)
    waits = needs_approval(request, aggressiveness, season)
    if waits is not None:  # recommend: deferred until a person decides; other levels: rejected
        return PolicyDecision.defer(waits, None) if aggressiveness == RECOMMEND else PolicyDecision.reject(waits)
    if (
        request.action == "create_index"
        and request.index_count is not None
        and request.index_count >= max_indexes_per_table
    ):
        return PolicyDecision.reject(
            f"table {request.table} already has {request.index_count} indexes "
            f"(at most {max_indexes_per_table} per table)"
        )
    if request.table is not None and request.table in busy_tables:
        return PolicyDecision.defer(f"another operation on {request.table} is in progress", now + BUSY_RETRY)
    criticality = calendar.criticality(request.emergency, now)
    if calendar.is_freeze_day(now):
        day = now.strftime("%a").lower()
        if request.emergency:
            return PolicyDecision.allow(f"emergency command passes the {day} freeze (criticality {criticality.name})")
        until = calendar.freeze_ends(now)
        when = until.isoformat() if until else "an operator sends it as an emergency (every day is frozen)"
        return PolicyDecision.defer(
            f"{day} is a freeze day (wedding day, criticality {criticality.name}, {calendar.timezone}): "
            f"no automatic schema change; deferred until {when}",
            until,
        )
    return PolicyDecision.allow(f"allowed at aggressiveness {level}, {season} season, criticality {criticality.name}")
