"""Prometheus metrics of `dbopt otlp` and a rate-limited log of rejected spans.

=========================================  =======  =======================  ==============================
metric                                      type     labels                   meaning
=========================================  =======  =======================  ==============================
dbopt_otlp_spans_total                      counter  source, outcome, reason  spans seen: outcome ``event``
                                                                              (reason ``-``), ``ignored`` or
                                                                              ``rejected`` with the reason
dbopt_otlp_unparsable_statements_total      counter  source                   events with the placeholder text
dbopt_otlp_requests_total                   counter  status                   OTLP/HTTP answers by status
dbopt_otlp_events_acknowledged_total        counter  -                        events the broker acknowledged
                                                                              (HTTP; the Kafka path counts in
                                                                              ``dbopt_stage_records_out_total``)
=========================================  =======  =======================  ==============================

``source`` is ``http`` or ``kafka``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally

from prometheus_client import Counter

from streams.otlp.mapping import IGNORED_REASONS, REJECTED_REASONS, MappingResult

log = logging.getLogger("dbopt.otlp")

SPANS = Counter("dbopt_otlp_spans", "Spans seen by dbopt otlp, by outcome and reason.", ["source", "outcome", "reason"])
UNPARSABLE = Counter(
    "dbopt_otlp_unparsable_statements", "Database spans whose statement pglast could not parse.", ["source"]
)
REQUESTS = Counter("dbopt_otlp_requests", "OTLP/HTTP requests answered, by HTTP status.", ["status"])
ACKNOWLEDGED = Counter("dbopt_otlp_events_acknowledged", "QueryEvents from OTLP/HTTP acknowledged by the broker.")
SOURCES = ("http", "kafka")

for _source in SOURCES:  # every series exists from the start (at 0), so rates and alerts see it
    SPANS.labels(_source, "event", "-")
    for _reason in IGNORED_REASONS:
        SPANS.labels(_source, "ignored", _reason)
    for _reason in REJECTED_REASONS:
        SPANS.labels(_source, "rejected", _reason)
    UNPARSABLE.labels(_source)


class RejectionLog:
    """One warning per ``interval_s`` at most: rejected spans since the last line, one detail per
    reason (details name attributes and limits, never a statement text)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._counts: Tally[str] = Tally()
        self._samples: dict[str, str] = {}
        self._last = float("-inf")
        self._lock = threading.Lock()

    def record(self, result: MappingResult) -> None:
        if not result.rejected:
            return
        now = time.monotonic()
        with self._lock:
            self._counts.update(result.rejected)
            for reason, detail in result.samples.items():
                self._samples.setdefault(reason, detail)
            if now - self._last < self.interval_s:
                return
            counts, samples = dict(self._counts), dict(self._samples)
            self._counts, self._samples, self._last = Tally(), {}, now
        log.warning(
            "otlp: rejected malformed spans: %s",
            "; ".join(f"{reason}={count} (e.g. {samples.get(reason, '-')})" for reason, count in sorted(counts.items())),
        )


def count(result: MappingResult, source: str) -> None:
    """Add one mapped request's outcome to the span counters."""
    if result.events:
        SPANS.labels(source, "event", "-").inc(len(result.events))
    for outcome, reasons in (("ignored", result.ignored), ("rejected", result.rejected)):
        for reason, n in reasons.items():
            SPANS.labels(source, outcome, reason).inc(n)
    if result.unparsable:
        UNPARSABLE.labels(source).inc(result.unparsable)
