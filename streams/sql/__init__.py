"""Shared, pure understanding of SQL text (pglast only)."""

from streams.sql.normalize import NormalizedStatement, SqlParseError, StatementCache, normalize

__all__ = ["NormalizedStatement", "SqlParseError", "StatementCache", "normalize"]
