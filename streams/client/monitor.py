"""``monitor_query``: time any block or function as one statement and emit a QueryEvent."""

from __future__ import annotations

import functools
import inspect
import time
from types import TracebackType
from typing import Any, Callable, TypeVar

from streams.client.events import check_context, error_code
from streams.client.producer import EventProducer

F = TypeVar("F", bound=Callable[..., Any])


class monitor_query:  # noqa: N801 - used like a function: `with monitor_query(...)`, `@monitor_query(...)`
    """Context manager and decorator.

    ``with monitor_query(producer, sql, wedding_id=w) as m: ...; m.rows = cur.rowcount``

    The block's exception (if any) is re-raised unchanged; the event records only its SQLSTATE
    or class name. ``rows`` stays -1 (unknown) unless the block sets it.
    """

    def __init__(self, producer: EventProducer, sql: str, **context: object) -> None:
        check_context(context)
        self.producer = producer
        self.sql = sql
        self.context = context
        self.rows = -1
        self._start = 0

    def __enter__(self) -> "monitor_query":
        self.rows = -1
        self._start = time.perf_counter_ns()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_ms = (time.perf_counter_ns() - self._start) / 1e6
        self.producer.emit_statement(
            self.sql, duration_ms, self.rows, error=None if exc is None else error_code(exc), event_time_ms=None,
            **self.context,
        )

    def __call__(self, func: F) -> F:
        """Decorate ``func``: each call is one monitored statement (a fresh monitor per call,
        so concurrent calls do not share timing state)."""

        def fresh() -> monitor_query:
            return monitor_query(self.producer, self.sql, **self.context)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with fresh():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with fresh():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
