"""Turn the bytes of one StatementSketch record into an accepted sketch or a reasoned rejection.

The statement fields (service, ids, text, type, tables, context fields, times) are held to the
very rules of a QueryEvent: the sketch is checked as the QueryEvent of its slowest execution
(``duration_ms`` = ``max_ms``, ``event_time`` = ``interval_start``) by
:func:`streams.ingest.validate.check_event`, so it is normalized and classified the same way and
rejected for the same reasons (a statement seen before is remembered, see :class:`SketchReader`).
Then the sketch itself must add up (``invalid_sketch``): the
worker's relative accuracy, ascending bins with positive counts, ``zero_count`` + the bin
counts = ``count``, errors within the count, finite ``0 <= min <= max`` and sum, and an interval
inside one pane of the worker's windows with ``last_event_time`` in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import lt
from typing import Any

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
    keys: Sequence[int]
    counts: Sequence[int]
    zeros: int
    count: int
    errors: int
    rows: int
    sum_ms: float
    min_ms: float
    max_ms: float


class SketchReader:
    """Turns the value of one statement-sketches record into a :class:`SketchInput` or a
    :class:`Rejected`. Statements already accepted are remembered (bounded memo, as for events):
    a sketch of a known statement whose own fields pass is not checked again by ``check_event``;
    anything else is, so verdicts and reasons are ``check_event``'s."""

    def __init__(self, codec: Codec, settings: Settings, spec: WindowSpec) -> None:
        self.codec, self.settings, self.spec = codec, settings, spec
        self._memo: dict[tuple[Any, ...], Statement] = {}

    def read(self, value: bytes | None, now_ms: int) -> SketchInput | Rejected:
        try:
            decoded = self.codec.decode(value)  # the decoder's dict: fastavro gave every field its schema type
        except DecodeError as exc:
            return Rejected(exc.reason, exc.detail)
        if decoded.schema_name != StatementSketch.SCHEMA:
            return Rejected("not_a_statement_sketch", f"record is a {decoded.schema_name}, not a StatementSketch")
        sketch = decoded.record
        problem = _inconsistency(sketch, self.settings, self.spec)
        if problem:
            return Rejected("invalid_sketch", problem)
        key = (sketch["fingerprint"], sketch["query_text"], sketch["statement_type"], tuple(sketch["tables"]))
        statement = self._memo.get(key)
        if statement is None or not self._own_fields_pass(sketch, now_ms):
            accepted = check_event(_stand_in(sketch), self.settings, now_ms)
            if isinstance(accepted, Rejected):
                return accepted
            statement = statement_of(accepted)
            if len(self._memo) >= self.settings.ingest.statement_cache:
                del self._memo[next(iter(self._memo))]  # the oldest
            self._memo[key] = statement
        return SketchInput(
            sketch["service"], sketch["interval_start"], sketch["last_event_time"], sketch["database"], statement,
            sketch["bin_keys"], sketch["bin_counts"], sketch["zero_count"], sketch["count"], sketch["errors"],
            sketch["rows"], sketch["sum_ms"], sketch["min_ms"], sketch["max_ms"],
        )  # fmt: skip

    def _own_fields_pass(self, sketch: dict[str, Any], now_ms: int) -> bool:
        """The checks ``check_event`` makes of the fields a statement does not determine."""
        limits = self.settings.ingest
        texts = (sketch["sketch_id"], sketch["service"], sketch["instance_id"])
        if not all(text.strip() and len(text) <= limits.max_string for text in texts):
            return False
        optional = (sketch["database"], sketch["vendor_category"], sketch["wedding_id"])
        if any(text is not None and len(text) > limits.max_string for text in optional):
            return False
        start = sketch["interval_start"]
        return now_ms - start <= limits.max_age_ms and start - now_ms <= limits.max_future_skew_ms


def _stand_in(sketch: dict[str, Any]) -> QueryEvent:
    """The QueryEvent of the sketch's slowest execution, at the start of its interval."""
    return QueryEvent(
        event_id=sketch["sketch_id"], service=sketch["service"], instance_id=sketch["instance_id"],
        event_time=sketch["interval_start"], fingerprint=sketch["fingerprint"], query_text=sketch["query_text"],
        statement_type=sketch["statement_type"], tables=tuple(sketch["tables"]), duration_ms=sketch["max_ms"],
        rows=sketch["rows"], error=None, database=sketch["database"], vendor_category=sketch["vendor_category"],
        wedding_id=sketch["wedding_id"],
    )  # fmt: skip


def _inconsistency(sketch: dict[str, Any], settings: Settings, spec: WindowSpec) -> str:
    """What does not add up in ``sketch`` ('' when it is consistent)."""
    if sketch["relative_accuracy"] != RELATIVE_ACCURACY:
        return f"relative_accuracy {sketch['relative_accuracy']} is not the worker's {RELATIVE_ACCURACY}"
    keys, counts = sketch["bin_keys"], sketch["bin_counts"]
    if len(keys) != len(counts):
        return f"{len(keys)} bin_keys but {len(counts)} bin_counts"
    if counts and (min(counts) < 1 or not all(map(lt, keys, islice(keys, 1, None)))):  # C loops: ~100 bins
        return "bin_keys must ascend strictly and every bin count be at least 1"
    binned = sum(counts)
    if sketch["count"] < 1 or sketch["zero_count"] < 0 or sketch["zero_count"] + binned != sketch["count"]:
        return f"count {sketch['count']} is not zero_count {sketch['zero_count']} + the bin counts {binned}"
    if not 0 <= sketch["errors"] <= sketch["count"] or sketch["rows"] < 0:
        return f"errors {sketch['errors']} must be within the count, rows {sketch['rows']} not negative"
    low, high, total = sketch["min_ms"], sketch["max_ms"], sketch["sum_ms"]
    if not (math.isfinite(low) and math.isfinite(high) and math.isfinite(total)) or not 0 <= low <= high or total < 0:
        return f"min {low}, max {high} and sum {total} must be finite with 0 <= min <= max and sum >= 0"
    if high > settings.ingest.max_duration_ms:
        return f"max_ms {high} is over the limit of {settings.ingest.max_duration_ms} ms"
    start, end, last = sketch["interval_start"], sketch["interval_end"], sketch["last_event_time"]
    if not start <= last < end:
        return f"last_event_time {last} is not in the interval [{start}, {end})"
    if spec.pane_start(start) != spec.pane_start(end - 1):
        return f"the interval [{start}, {end}) straddles a pane boundary (panes of {spec.pane_ms} ms)"
    return ""
