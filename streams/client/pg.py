"""psycopg 3 integration: every statement a connection executes becomes one QueryEvent.

``instrument(conn, producer)`` swaps the connection's documented ``cursor_factory`` for a subclass
of it whose ``execute``/``executemany`` are timed, so ``conn.execute``, ``cursor.execute`` and
``cursor.executemany`` are all covered (one event per call; ``executemany`` reports the total
rowcount). Named (server-side) cursors are not instrumented.

The statement text handed to the normalizer is the one psycopg sent to the server: with server-side
binding ``%s`` placeholders are already ``$n`` there, so the text is identical on every call and the
statement cache hits. (With ``ClientCursor`` it holds merged literals; they are stripped all the same,
just without cache hits.)
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql as psql

from streams.client.events import check_context, error_code
from streams.client.producer import EventProducer


class _Monitored:
    """What sync and async monitored cursors share. Class attributes are set per instrumented connection."""

    _dbopt_producer: EventProducer
    _dbopt_context: dict[str, object]
    _dbopt_sent: bytes | None = None

    def _convert_query(self, query: Any, params: Any = None) -> Any:
        # psycopg converts every execute here, prepared or not (it stops setting ``_query``
        # once a statement is prepared, after its 5th run): remember the text it sends
        converted = super()._convert_query(query, params)  # type: ignore[misc]
        self._dbopt_sent = converted.query
        return converted

    def _dbopt_text(self, query: Any) -> str:
        sent = self._dbopt_sent
        self._dbopt_sent = None
        if isinstance(sent, (bytes, bytearray, memoryview)):
            return bytes(sent).decode("utf-8", "replace")
        if isinstance(query, (bytes, bytearray)):
            return bytes(query).decode("utf-8", "replace")
        if isinstance(query, psql.Composable):
            return query.as_string(self.connection)  # type: ignore[attr-defined]
        return str(query)

    def _dbopt_emit(self, query: Any, start_ns: int, exc: BaseException | None) -> None:
        duration_ms = (time.perf_counter_ns() - start_ns) / 1e6
        try:
            text = self._dbopt_text(query)
            rows = -1 if exc is not None else self.rowcount  # type: ignore[attr-defined]
        except Exception:
            text, rows = "", -1  # unparsable: the SDK sends its placeholder text
        self._dbopt_producer.emit_statement(
            text, duration_ms, rows, error=None if exc is None else error_code(exc), event_time_ms=None,
            **self._dbopt_context,
        )


class _MonitoredSync(_Monitored):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            result = super().execute(query, params, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            self._dbopt_emit(query, start, exc)
            raise
        self._dbopt_emit(query, start, None)
        return result

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        start = time.perf_counter_ns()
        try:
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            self._dbopt_emit(query, start, exc)
            raise
        self._dbopt_emit(query, start, None)


class _MonitoredAsync(_Monitored):
    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            result = await super().execute(query, params, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            self._dbopt_emit(query, start, exc)
            raise
        self._dbopt_emit(query, start, None)
        return result

    async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        start = time.perf_counter_ns()
        try:
            await super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            self._dbopt_emit(query, start, exc)
            raise
        self._dbopt_emit(query, start, None)


def instrument(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], producer: EventProducer, **context: object
) -> None:
    """Emit a QueryEvent for every statement executed on ``conn`` (sync or async).

    ``context`` carries business fields (``vendor_category``, ``wedding_id``, ``database``);
    ``database`` defaults to the connection's database name. Calling it twice re-wraps the
    original cursor class, it does not stack.
    """
    check_context(context)
    base = conn.cursor_factory
    original = getattr(base, "_dbopt_base", base)
    mixin = _MonitoredAsync if isinstance(conn, psycopg.AsyncConnection) else _MonitoredSync
    context = {"database": producer.database or conn.info.dbname, **context}
    conn.cursor_factory = type(
        f"Monitored{original.__name__}",
        (mixin, original),
        {"_dbopt_producer": producer, "_dbopt_context": context, "_dbopt_base": original},
    )
