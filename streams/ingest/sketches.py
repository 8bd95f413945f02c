"""Turn the bytes of one StatementSketch record into an accepted sketch or a reasoned rejection.

The statement fields (service, ids, text, type, tables, context fields, times) are held to the
very rules of a QueryEvent: the sketch is checked as the QueryEvent of its slowest execution
(``duration_ms`` = ``max_ms``, ``event_time`` = ``interval_start``) by
:func:`streams.ingest.validate.check_event`, so it is normalized and classified the same way and
rejected for the same reasons. Then the sketch itself must add up (``invalid_sketch``): the
worker's relative accuracy, ascending bins with positive counts, ``zero_count`` + the bin
counts = ``count``, errors within the count, finite ``0 <= min <= max`` and sum, and an interval
inside one pane of the worker's windows with ``last_event_time`` in it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from streams.config import Settings
from streams.ingest.reader import Statement, statement_of
from streams.ingest.validate import Rejected, check_event
from streams.records import QueryEvent, StatementSketch
from streams.serde import Codec, DecodeError
from streams.windows.panes import WindowSpec
from streams.windows.sketch import RELATIVE_ACCURACY


@dataclass(frozen=True, slots=True)
class SketchInput:
    """An accepted StatementSketch: many executions of one statement within one pane."""

    service: str
    interval_start: int
    last_event_time: int
    database: str | None
    statement: Statement
    keys: tuple[int, ...]
    counts: tuple[int, ...]
    zeros: int
    count: int
    errors: int
    rows: int
    sum_ms: float
    min_ms: float
    max_ms: float


def read_sketch(value: bytes | None, codec: Codec, settings: Settings, spec: WindowSpec, now_ms: int) -> SketchInput | Rejected:
    try:
        record = codec.decode_record(value)
    except DecodeError as exc:
        return Rejected(exc.reason, exc.detail)
    if not isinstance(record, StatementSketch):
        return Rejected("not_a_statement_sketch", f"record is a {record.SCHEMA}, not a StatementSketch")
    problem = _inconsistency(record, settings, spec)
    if problem:
        return Rejected("invalid_sketch", problem)
    stand_in = QueryEvent(
        event_id=record.sketch_id, service=record.service, instance_id=record.instance_id,
        event_time=record.interval_start, fingerprint=record.fingerprint, query_text=record.query_text,
        statement_type=record.statement_type, tables=record.tables, duration_ms=record.max_ms, rows=record.rows,
        error=None, database=record.database, vendor_category=record.vendor_category, wedding_id=record.wedding_id,
    )  # fmt: skip
    accepted = check_event(stand_in, settings, now_ms)
    if isinstance(accepted, Rejected):
        return accepted
    return SketchInput(
        record.service, record.interval_start, record.last_event_time, record.database, statement_of(accepted),
        record.bin_keys, record.bin_counts, record.zero_count, record.count, record.errors, record.rows,
        record.sum_ms, record.min_ms, record.max_ms,
    )  # fmt: skip


def _inconsistency(sketch: StatementSketch, settings: Settings, spec: WindowSpec) -> str:
    """What does not add up in ``sketch`` ('' when it is consistent)."""
    if sketch.relative_accuracy != RELATIVE_ACCURACY:
        return f"relative_accuracy {sketch.relative_accuracy} is not the worker's {RELATIVE_ACCURACY}"
    keys, counts = sketch.bin_keys, sketch.bin_counts
    if len(keys) != len(counts):
        return f"{len(keys)} bin_keys but {len(counts)} bin_counts"
    if any(b <= a for a, b in itertools.pairwise(keys)) or any(n < 1 for n in counts):
        return "bin_keys must ascend strictly and every bin count be at least 1"
    if sketch.count < 1 or sketch.zero_count < 0 or sketch.zero_count + sum(counts) != sketch.count:
        return f"count {sketch.count} is not zero_count {sketch.zero_count} + the bin counts {sum(counts)}"
    if not 0 <= sketch.errors <= sketch.count or sketch.rows < 0:
        return f"errors {sketch.errors} must be within the count, rows {sketch.rows} not negative"
    low, high, total = sketch.min_ms, sketch.max_ms, sketch.sum_ms
    if not all(math.isfinite(x) for x in (low, high, total)) or not 0 <= low <= high or total < 0:
        return f"min {low}, max {high} and sum {total} must be finite with 0 <= min <= max and sum >= 0"
    if high > settings.ingest.max_duration_ms:
        return f"max_ms {high} is over the limit of {settings.ingest.max_duration_ms} ms"
    start, end, last = sketch.interval_start, sketch.interval_end, sketch.last_event_time
    if not start <= last < end:
        return f"last_event_time {last} is not in the interval [{start}, {end})"
    if spec.pane_start(start) != spec.pane_start(end - 1):
        return f"the interval [{start}, {end}) straddles a pane boundary (panes of {spec.pane_ms} ms)"
    return ""
