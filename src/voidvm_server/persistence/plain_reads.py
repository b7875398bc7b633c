"""PlainRead: a hot read's Core statement, compiled once for SQLite and run on sqlite3 directly.

Every authenticated request reads its principal, and a VM list reads a page; through SQLAlchemy's
execution (cache key, execution context, result rows, the session) each such read costs 0.1-0.5 ms
of CPU where SQLite itself answers in 10-30 µs. A PlainRead keeps the statement as the one
definition of the query: it is compiled by SQLAlchemy, its rows come back through the column
types' own result processors (datetimes parsed as SQLAlchemy parses them), and on any other
database, or any session that is not an in-loop SQLite reader, the same statement is executed by
SQLAlchemy as usual (`fetch_all`). Only what SQLAlchemy does per execution is skipped.

Bound parameters must be plain values the driver takes as they are (strings, integers, None): a
statement whose parameters need a bind processor (a datetime, say) is refused when it is built.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, Select, String
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = sqlite.dialect()  # pysqlite: the dialect of the in-loop readers
_PLAIN_BIND_TYPES = (String, Integer)


class PlainRead:
    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=_DIALECT)
        for bind in compiled.binds.values():
            if not isinstance(bind.type, _PLAIN_BIND_TYPES):
                raise TypeError(f"parameter {bind.key} is {bind.type!r}, not a plain value")
        self.sql = str(compiled)
        self.positions = tuple(compiled.positiontup or ())
        # Literal values in the statement (not given per call) keep their compiled value.
        self.fixed = {name: compiled.binds[name].value for name in self.positions}
        columns = list(statement.selected_columns)
        self.row_type: Any = namedtuple("PlainRow", [c.key for c in columns], rename=True)  # type: ignore[misc]
        self.processors: list[Callable[[Any], Any] | None] = [
            c.type._cached_result_processor(_DIALECT, None)  # what SQLAlchemy's own rows apply
            for c in columns
        ]

    def run(self, conn: sqlite3.Connection, params: Mapping[str, Any]) -> list[Any]:
        values = [params[name] if name in params else self.fixed[name] for name in self.positions]
        try:
            rows = conn.execute(self.sql, values).fetchall()
        except sqlite3.Error as exc:  # as SQLAlchemy would raise it: the callers map those
            raise DBAPIError.instance(self.sql, values, exc, sqlite3.Error) from exc
        make: Callable[[Any], Any] = self.row_type._make
        processors = self.processors
        if not any(processors):
            return [make(row) for row in rows]
        return [make(map(_processed, processors, row)) for row in rows]


def _processed(process: Callable[[Any], Any] | None, value: Any) -> Any:
    return value if process is None or value is None else process(value)


async def fetch_all(session: AsyncSession, read: PlainRead, params: Mapping[str, Any]) -> Sequence[Any]:
    """The statement's rows (attribute access by column key): straight from sqlite3 when the
    session is an in-loop SQLite reader (`Database.reading()` on SQLite), else through SQLAlchemy."""
    plain_connection = getattr(session, "plain_connection", None)
    if plain_connection is not None:
        return read.run(plain_connection(), params)
    rows: Sequence[Any] = (await session.execute(read.statement, dict(params))).all()
    return rows
