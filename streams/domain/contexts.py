"""Which business context a query belongs to, from the tables it touches (pure).

A table matches a rule by its unqualified, lower-case name (``public.Bookings`` matches
``bookings``). When a query touches tables of several contexts, the most critical context
wins; between equally critical contexts the rule listed first wins (booking before payment
in the defaults). A query touching no known table is ``other`` with medium criticality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from streams.config import DomainSettings
from streams.domain.vocabulary import CRITICALITIES


@dataclass(frozen=True, slots=True)
class Classification:
    context: str
    criticality: str


def table_key(table: str) -> str:
    """The name rules are matched on: lower-case, without schema (or database) qualifier."""
    return table.rsplit(".", 1)[-1].strip('"').lower()


def classify(tables: Iterable[str], domain: DomainSettings) -> Classification:
    names = {table_key(t) for t in tables}
    best: tuple[int, int] | None = None
    chosen = Classification(domain.default_context, domain.default_criticality)
    for order, rule in enumerate(domain.context_rules):
        if names.isdisjoint(rule.tables):
            continue
        rank = (CRITICALITIES.index(rule.criticality), order)
        if best is None or rank < best:
            best = rank
            chosen = Classification(rule.context, rule.criticality)
    return chosen
