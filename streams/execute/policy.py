"""Whether an allowlisted, catalog-checked command may run now (pure).

Rules, in order:

1. **Aggressiveness** decides which *automatic* actions (origin ``advisor``/``verifier``) apply:
   conservative = ANALYZE, VACUUM; moderate = + CREATE INDEX, REINDEX; aggressive = + DROP INDEX.
   In peak and proposal season ``aggressive`` acts as ``moderate`` (no automatic drops while
   traffic is high). A command an operator submitted is an explicit human decision and a
   rollback (``rollback_of`` set) undoes a change, so aggressiveness never blocks those.
   A blocked action is rejected: it stays a recommendation for a human.
2. **At most N indexes per table** (``DBOPT_MAX_INDEXES_PER_TABLE``, default 10), for everyone.
3. **One operation per table at a time**: a table with a running operation defers the command.
4. **Freeze days** (wedding days, ``DBOPT_FREEZE_WEEKDAYS``): every change is deferred until the
   freeze ends, unless the command is an emergency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from streams.domain.calendar import Calendar

AUTO_ACTIONS: dict[str, frozenset[str]] = {
    "conservative": frozenset({"analyze", "vacuum"}),
    "moderate": frozenset({"analyze", "vacuum", "create_index", "reindex"}),
    "aggressive": frozenset({"analyze", "vacuum", "create_index", "reindex", "drop_index"}),
}
HIGH_TRAFFIC_SEASONS = ("peak", "proposal")
BUSY_RETRY = timedelta(minutes=1)


@dataclass(frozen=True)
class Decision:
    verdict: str  # "allow" | "reject" | "defer"
    reason: str
    until: datetime | None = None  # defer: when to look again (None: only an operator can unblock it)

    @classmethod
    def allow(cls, reason: str) -> "Decision":
        return cls("allow", reason)

    @classmethod
    def reject(cls, reason: str) -> "Decision":
        return cls("reject", reason)

    @classmethod
    def defer(cls, reason: str, until: datetime | None) -> "Decision":
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


def decide(
    request: Request,
    *,
    aggressiveness: str,
    max_indexes_per_table: int,
    busy_tables: frozenset[str],
    calendar: Calendar,
) -> Decision:
    now = calendar.now()
    season = calendar.season(now)
    level = effective_aggressiveness(aggressiveness, season)
    if request.origin != "operator" and not request.is_rollback and request.action not in AUTO_ACTIONS[level]:
        note = "" if level == aggressiveness else f" ({aggressiveness} acts as {level} in {season} season)"
        return Decision.reject(
            f"{request.action} is not applied automatically at aggressiveness {level}{note}; "
            "it stays a recommendation: an operator can submit it with `dbopt command submit`"
        )
    if (
        request.action == "create_index"
        and request.index_count is not None
        and request.index_count >= max_indexes_per_table
    ):
        return Decision.reject(
            f"table {request.table} already has {request.index_count} indexes "
            f"(at most {max_indexes_per_table} per table)"
        )
    if request.table is not None and request.table in busy_tables:
        return Decision.defer(f"another operation on {request.table} is in progress", now + BUSY_RETRY)
    criticality = calendar.criticality(request.emergency, now)
    if calendar.is_freeze_day(now):
        day = now.strftime("%a").lower()
        if request.emergency:
            return Decision.allow(f"emergency command passes the {day} freeze (criticality {criticality.name})")
        until = calendar.freeze_ends(now)
        when = until.isoformat() if until else "an operator sends it as an emergency (every day is frozen)"
        return Decision.defer(
            f"{day} is a freeze day (wedding day, criticality {criticality.name}, {calendar.timezone}): "
            f"no automatic schema change; deferred until {when}",
            until,
        )
    return Decision.allow(f"allowed at aggressiveness {level}, {season} season, criticality {criticality.name}")
