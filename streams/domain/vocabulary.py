"""The wedding platform's words (pure): criticalities, seasons, weekdays, business contexts.

Settings (``streams.config``) use these as the allowed values and defaults of the domain
settings; the domain modules (contexts, SLOs, calendar) reason with them. Each word list is a
``Literal`` type, so a setting typed with it is checked when it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Criticality = Literal["critical", "high", "medium"]
CRITICALITIES: tuple[Criticality, ...] = get_args(Criticality)  # most critical first

Season = Literal["peak", "proposal", "off"]
SEASONS: tuple[Season, ...] = get_args(Season)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)  # index = datetime.weekday()


@dataclass(frozen=True)
class ContextRule:
    """Queries touching one of ``tables`` (lower-case, unqualified) belong to ``context``."""

    context: str
    criticality: Criticality
    tables: tuple[str, ...]


DEFAULT_CONTEXT_RULES: tuple[ContextRule, ...] = (
    ContextRule("booking", "critical", ("bookings", "reservations", "availability")),
    ContextRule("payment", "critical", ("payments", "invoices", "transactions")),
    ContextRule("vendor_search", "high", ("vendors", "suppliers", "services")),
    ContextRule("timeline", "high", ("timeline", "schedule", "events", "timeline_events")),
    ContextRule("guest_management", "medium", ("guests", "invitations", "rsvp")),
)

# the documented p95 SLO (ms) of each context; a context not listed gets the default SLO setting
DEFAULT_SLO_P95_MS: dict[str, float] = {"booking": 50.0, "vendor_search": 100.0, "payment": 20.0, "timeline": 30.0}
