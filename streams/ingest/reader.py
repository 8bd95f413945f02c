"""The worker's per-event path: what :func:`streams.ingest.validate` decides, at a fraction of its cost.

Most events of a service repeat a handful of statements: the bytes from ``fingerprint`` to
``tables`` of a QueryEvent are the same for every execution of one statement. :class:`EventReader`
therefore

* decodes only the fields that change per execution, straight from the Avro body of the current
  QueryEvent revision (single-object framing), without building a dict or a record;
* looks the statement bytes up in a bounded memo: the first time, the whole record goes through
  :func:`validate` (decode, every check, pglast normalization, classification) and the memo keeps
  the resulting :class:`Statement`; afterwards the same bytes need no decoding, re-normalizing
  or classifying;
* checks the per-execution fields (ids, duration, event time, optional strings) inline.

Anything unusual — another schema revision, Confluent framing, a malformed body, a record a
per-execution check rejects — goes through :func:`validate` itself, so the verdict and the DLQ
reason are exactly :func:`validate`'s (``tests/test_ingest_reader.py`` holds the two to each other).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from streams.config import Settings
from streams.ingest.validate import Accepted, Rejected, validate
from streams.serde import Codec
from streams.serde.codec import SINGLE_OBJECT_MAGIC

_DOUBLE = struct.Struct("<d").unpack_from
_FOUR_NULLS = b"\x00\x00\x00\x00"
# the layout the inline decoder reads: the current QueryEvent revision's fields, in order
_LAYOUT = (
    ("event_id", "string"), ("service", "string"), ("instance_id", "string"), ("event_time", "long"),
    ("fingerprint", ("null", "string")), ("query_text", "string"), ("statement_type", "string"),
    ("tables", ("array", "string")), ("duration_ms", "double"), ("rows", "long"), ("error", ("null", "string")),
    ("database", ("null", "string")), ("vendor_category", ("null", "string")), ("wedding_id", ("null", "string")),
)  # fmt: skip


class _Unusual(Exception):
    """The inline decoder met something it does not handle: :func:`validate` decides."""


@dataclass(frozen=True, slots=True)
class Statement:
    """What the worker knows about an accepted statement: normalized, classified."""

    fingerprint: str
    query_text: str
    statement_type: str
    tables: tuple[str, ...]
    context: str
    criticality: str


@dataclass(slots=True)
class Execution:
    """One accepted execution, as the windows need it."""

    service: str
    event_time: int
    duration_ms: float
    error: bool
    rows: int
    database: str | None
    statement: Statement


def _field_type(schema: object) -> object:
    if isinstance(schema, list):
        return tuple(_field_type(s) for s in schema)
    if isinstance(schema, dict):
        if schema["type"] == "array":
            return ("array", _field_type(schema["items"]))
        return schema["type"]
    return schema


def _varint(data: bytes, i: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int/long) at ``i``: (value, next index)."""
    result = shift = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), i
        shift += 7
        if shift > 63:
            raise _Unusual("varint too long")


def _skip_string(data: bytes, i: int) -> int:
    """The index after the Avro string (or bytes) at ``i``."""
    b = data[i]
    if b < 0x80 and not b & 1:  # a length below 64: one byte
        return i + 1 + (b >> 1)
    n, i = _varint(data, i)
    if n < 0:
        raise _Unusual("negative length")
    return i + n


class EventReader:
    """Turns the value of one query-events record into an :class:`Execution` or a :class:`Rejected`."""

    def __init__(self, codec: Codec, settings: Settings) -> None:
        self.codec = codec
        self.settings = settings
        limits = settings.ingest
        self._max_string = limits.max_string
        self._max_age = limits.max_age_ms
        self._max_skew = limits.max_future_skew_ms
        self._max_duration = limits.max_duration_ms
        self._memo_size = limits.statement_cache
        self._memo: dict[bytes, Statement] = {}  # statement bytes -> what validate() made of them
        writer = codec.schemas.current["QueryEvent"]
        fields = tuple((f["name"], _field_type(f["type"])) for f in writer.parsed["fields"])
        #: False when the current QueryEvent revision is not the layout the inline decoder reads
        self.inline = fields == _LAYOUT and codec.registry is None
        self._prefix = SINGLE_OBJECT_MAGIC + writer.fingerprint

    def read(self, value: bytes | None, now_ms: int) -> Execution | Rejected:
        if self.inline and value is not None and value[:10] == self._prefix:
            try:
                execution = self._inline(value, now_ms)
            except (_Unusual, IndexError, UnicodeDecodeError, struct.error):
                execution = None
            if execution is not None:
                return execution
        return self._validated(value, now_ms)

    def _validated(self, value: bytes | None, now_ms: int) -> Execution | Rejected:
        """The exact path: :func:`validate`, and the memo learns the statement."""
        result = validate(value, self.codec, self.settings, now_ms)
        if isinstance(result, Rejected):
            return result
        execution = _execution(result)
        if self.inline and value is not None and value[:10] == self._prefix:
            try:
                start, end = self._statement_span(value)
            except (_Unusual, IndexError):
                return execution
            memo = self._memo
            if len(memo) >= self._memo_size:
                del memo[next(iter(memo))]  # the oldest
            memo[value[start:end]] = execution.statement
        return execution

    def _statement_span(self, data: bytes) -> tuple[int, int]:
        """Where the statement bytes (fingerprint .. tables) of a record lie."""
        i = 10
        for _ in range(3):  # event_id, service, instance_id
            i = _skip_string(data, i)
        _, i = _varint(data, i)  # event_time
        return i, self._skip_statement(data, i)

    @staticmethod
    def _skip_statement(data: bytes, i: int) -> int:
        """The index after the statement bytes that start at ``i``."""
        branch = data[i]  # fingerprint: ["null", "string"]
        i += 1
        if branch == 2:
            i = _skip_string(data, i)
        elif branch != 0:
            raise _Unusual("union branch")
        i = _skip_string(data, _skip_string(data, i))  # query_text, statement_type
        while True:  # tables: blocks of strings
            b = data[i]
            if b < 0x80:
                count, i = (b >> 1) ^ -(b & 1), i + 1
            else:
                count, i = _varint(data, i)
            if count == 0:
                return i
            if count < 0:
                count = -count
                _, i = _varint(data, i)  # the block's size in bytes
            for _ in range(count):
                i = _skip_string(data, i)

    def _inline(self, data: bytes, now_ms: int) -> Execution | None:
        """The per-execution fields decoded in place; None: let :func:`validate` decide.

        Lengths under 64 bytes are one-byte varints. ``event_id``, ``service`` and ``instance_id``
        must be short ASCII texts starting with a visible character (so they are not blank and
        within ``max_string``); anything else goes to :func:`validate`.
        """
        max_string = self._max_string
        b = data[10]  # event_id
        if b >= 0x80 or b & 1 or b == 0 or b >> 1 > max_string or data[11] <= 0x20:
            return None
        i = 11 + (b >> 1)
        if not data[11:i].isascii():
            return None
        b = data[i]  # service
        if b >= 0x80 or b & 1 or b == 0 or b >> 1 > max_string or data[i + 1] <= 0x20:
            return None
        service_at, i = i + 1, i + 1 + (b >> 1)
        service = data[service_at:i].decode("ascii")
        b = data[i]  # instance_id
        if b >= 0x80 or b & 1 or b == 0 or b >> 1 > max_string or data[i + 1] <= 0x20:
            return None
        if not data[i + 1 : i + 1 + (b >> 1)].isascii():
            return None
        i += 1 + (b >> 1)
        result = shift = 0  # event_time: a varint of about six bytes
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        event_time = (result >> 1) ^ -(result & 1)
        if now_ms - event_time > self._max_age or event_time - now_ms > self._max_skew:
            return None
        end = len(data)
        # the common tail: duration (8 bytes), rows (one byte), error/database/vendor_category/wedding_id
        # null; the memo hit proves the statement ends where the tail begins (Avro fields delimit themselves)
        statement = None
        if data[end - 4 :] == _FOUR_NULLS and data[end - 5] < 0x80:
            statement = self._memo.get(data[i : end - 13])
        if statement is not None:
            (duration,) = _DOUBLE(data, end - 13)
            b = data[end - 5]
            rows, error, database = (b >> 1) ^ -(b & 1), None, None
        else:
            start = i
            i = self._skip_statement(data, i)
            statement = self._memo.get(data[start:i])
            if statement is None:
                return None
            (duration,) = _DOUBLE(data, i)
            rows, i = _varint(data, i + 8)
            optional: list[str | None] = []
            for _ in range(4):  # error, database, vendor_category, wedding_id: bounded
                branch = data[i]
                i += 1
                if branch == 0:
                    optional.append(None)
                elif branch == 2:
                    n, i = _varint(data, i)
                    if n < 0 or n > max_string:
                        return None
                    optional.append(data[i : i + n].decode())
                    i += n
                else:
                    return None
            if i != end:
                return None
            error, database = optional[0], optional[1]
        if not 0.0 <= duration <= self._max_duration:  # NaN fails too
            return None
        return Execution(service, event_time, duration, bool(error), rows, database, statement)


def statement_of(accepted: Accepted) -> Statement:
    """The statement of an accepted event (see :func:`shared_statement`)."""
    event = accepted.event
    assert event.fingerprint is not None  # validate() always fills it in
    return shared_statement(event.fingerprint, event.query_text, event.statement_type, event.tables,
                            accepted.context, accepted.criticality)  # fmt: skip


def shared_statement(
    fingerprint: str, query_text: str, statement_type: str, tables: Iterable[str], context: str, criticality: str
) -> Statement:
    """A Statement whose repeated texts are interned and whose tables tuple is shared, since the
    windows keep one Statement per key for as long as the key has open windows and many keys share
    a text (one query shape, several services or contexts); new and restored statements alike."""
    given = tuple(tables)
    shared = _TABLES.get(given)
    if shared is None:
        shared = tuple(sys.intern(table) for table in given)
        if len(_TABLES) < _TABLES_KEPT:
            _TABLES[shared] = shared
    return Statement(fingerprint, sys.intern(query_text), sys.intern(statement_type), shared, sys.intern(context),
                     sys.intern(criticality))  # fmt: skip


_TABLES: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct list of tables
_TABLES_KEPT = 10_000


def _execution(accepted: Accepted) -> Execution:
    event = accepted.event
    return Execution(event.service, event.event_time, event.duration_ms, bool(event.error), event.rows,
                     event.database, statement_of(accepted))  # fmt: skip
