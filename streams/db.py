"""The one way dbopt connects to the target database.

dbopt never depends on a connection's default ``search_path``. PostgreSQL's default is
``"$user", public``: once a schema named like the connecting role exists (dbopt's own audit
schema ``dbopt`` is one, when dbopt connects as role ``dbopt``), every unqualified ``CREATE``
lands there and every unqualified name may resolve there. So every dbopt connection pins
``search_path`` to ``DBOPT_DATABASE_SEARCH_PATH`` (default ``public``) at connection start
(the ``options`` startup parameter: ``RESET`` and ``RESET ALL`` keep it), and:

* the statements dbopt writes itself name their schema anyway;
* the unqualified names in the services' statements (what the SDK captured, what an operator
  submits) resolve against that configured path — in the advisor's HypoPG plans, in the
  executor's catalog checks and in the statement the executor runs alike. Set it to the
  ``search_path`` the services use;
* the demo creates its tables in the first schema of the path (:func:`target_schema`).
"""

from __future__ import annotations

from typing import Any, Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict

from streams.config import Settings

CONNECT_TIMEOUT_S = 5


def target_schema(settings: Settings) -> str:
    """The schema the target tables are in: the first of the pinned search path."""
    return settings.database_search_path[0]


def _option(name: str, value: object) -> str:
    # libpq splits ``options`` at spaces unless they are escaped with a backslash
    text = str(value).replace("\\", "\\\\").replace(" ", "\\ ")
    return f"-c {name}={text}"


def connection_args(
    settings: Settings,
    *,
    application_name: str,
    url: str | None = None,
    autocommit: bool = True,
    session: Mapping[str, object] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The conninfo and keyword arguments of :func:`connect` (also a psycopg_pool pool's ``kwargs``)."""
    conninfo = url or settings.database_url.get_secret_value()
    params = conninfo_to_dict(conninfo)
    pinned = {**(session or {}), "search_path": ",".join(settings.database_search_path)}
    options = " ".join([str(params.get("options") or ""), *(_option(k, v) for k, v in pinned.items())]).strip()
    return conninfo, {
        "autocommit": autocommit,
        "application_name": application_name,
        "connect_timeout": params.get("connect_timeout") or CONNECT_TIMEOUT_S,
        "options": options,
    }


def connect(
    settings: Settings,
    *,
    application_name: str,
    url: str | None = None,
    autocommit: bool = True,
    session: Mapping[str, object] | None = None,
) -> psycopg.Connection[Any]:
    """A connection to ``url`` (default: the configured database) with the search path pinned.

    ``session`` holds further settings fixed for the session (e.g. ``statement_timeout``).
    ``options`` and ``connect_timeout`` already in the URL are kept; the search path is pinned last.
    """
    conninfo, kwargs = connection_args(
        settings, application_name=application_name, url=url, autocommit=autocommit, session=session
    )
    return psycopg.connect(conninfo, **kwargs)


def table_exists(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    """Whether the table ``schema.name`` exists (both names as they are: quoted, not case-folded)."""
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL", (schema, name)
    ).fetchone()
    return bool(row and row[0])
