"""What the CLI prints: tables for people, ``--json`` for scripts, ``--quiet`` for ids only,
and errors as one line on stderr.

Tables are plain (no box), fit the terminal (80 columns when stdout is not one) and never
break a word: a cell that does not fit is cut with an ellipsis instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .._errors import VoidVMError

__all__ = ["Column", "Output", "describe_details", "error_line", "human_age", "human_size"]

_STATUS_STYLES = {
    "running": "green",
    "stopped": "dim",
    "paused": "yellow",
    "error": "bold red",
    "creating": "cyan",
    "starting": "cyan",
    "stopping": "cyan",
    "rebooting": "cyan",
    "deleting": "magenta",
    "available": "green",
    "downloading": "cyan",
    "active": "green",
    "disabled": "dim",
    "pending": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
}


def human_size(value: Any) -> str:
    """Bytes as ``1.5 GiB``; ``-`` for anything that is not a number."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # unreachable


def human_age(value: Any, now: datetime | None = None) -> str:
    """The time since an ISO timestamp (``2026-12-01T10:00:00Z``) as ``45s``, ``12m``, ``3h`` or
    ``5d``; ``-`` for anything that is not one."""
    try:
        then = datetime.fromisoformat(str(value))
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value) or "-"
    return str(value)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def describe_details(details: Any) -> str:
    """An error's ``details`` in words: ``name: already taken; cpu: at most 32``."""
    if details is None or details == "" or details == [] or details == {}:
        return ""
    if isinstance(details, list):
        return "; ".join(_detail_item(item) for item in details)
    if isinstance(details, Mapping):
        return "; ".join(f"{key}: {_cell(value)}" for key, value in details.items())
    return str(details)


def _detail_item(item: Any) -> str:
    if isinstance(item, Mapping) and ("field" in item or "reason" in item):
        field, reason = item.get("field"), item.get("reason") or item.get("message") or ""
        return f"{field}: {reason}" if field else str(reason)
    if isinstance(item, Mapping):
        return ", ".join(f"{key} {_cell(value)}" for key, value in item.items())
    return str(item)


def error_line(error: VoidVMError) -> str:
    """``Error: CODE: message (details in words)``: one line, no reprs."""
    message = " ".join(str(error.message).split())
    details = describe_details(error.details)
    line = f"Error: {error.code}: {message}"
    if details and details not in message:
        line += f" ({details})"
    if error.code == "TOKEN_EXPIRED" or error.code == "NOT_LOGGED_IN":
        line += "; run `voidvm login`" if "voidvm login" not in line else ""
    if (error.status or 0) >= 500 and error.request_id:
        line += f" [request {error.request_id}]"
    return line


_GAP = 2  # spaces between columns (rich's default padding of one on each side)
_MIN_SHRUNK = 8


def _fit(
    headers: Sequence[str], rows: Sequence[Sequence[str]], columns: Sequence[Column], width: int
) -> list[int]:
    """Column widths that fit ``width``: only the ``shrink`` columns (free text) give way,
    down to a few characters each; ids, statuses and numbers keep their full width."""
    natural = [
        max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)
    ]
    excess = sum(natural) + _GAP * (len(natural) - 1) - width
    shrinkable = [i for i, column in enumerate(columns) if column.shrink]
    while excess > 0 and shrinkable:
        widest = max(shrinkable, key=lambda i: natural[i])
        if natural[widest] <= _MIN_SHRUNK:
            break
        natural[widest] -= 1
        excess -= 1
    return natural


@dataclass(frozen=True)
class Column:
    """One table column: its header, how to get the cell from a record, and its layout."""

    header: str
    value: Callable[[Mapping[str, Any]], Any]
    #: Cut before other columns when the table is too wide (long free text).
    shrink: bool = False
    status: bool = False
    justify: str = "left"


class Output:
    """Printing for one CLI invocation."""

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = Console(highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)

    # -- plain output ------------------------------------------------------------------------
    def json(self, data: Any) -> None:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def message(self, text: str) -> None:
        """A human remark on stderr; silent with ``--json`` or ``--quiet``."""
        if not self.json_mode and not self.quiet:
            self.err.print(text, markup=False, highlight=False)

    def notice(self, text: str) -> None:
        """Something the user should see even with ``--quiet`` (on stderr, so never in JSON)."""
        self.err.print(text, markup=False, highlight=False, style="yellow")

    def rate_limited(self, seconds: float) -> None:
        self.notice(f"Rate limited by the server; retrying in {seconds:.0f} s…")

    def ids(self, records: Sequence[Mapping[str, Any]], key: str = "id") -> None:
        for record in records:
            typer.echo(str(record.get(key, "")))

    # -- records and tables ------------------------------------------------------------------
    def record(self, data: Mapping[str, Any], title: str | None = None, key: str = "id") -> None:
        """One object: JSON, its id (``--quiet``) or a two-column listing."""
        if self.json_mode:
            self.json(data)
            return
        if self.quiet:
            self.ids([data], key)
            return
        table = Table(title=title, show_header=False, box=None, pad_edge=False)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, value in _flatten(data):
            cell = _cell(value)
            table.add_row(
                name, Text(cell, style=_STATUS_STYLES.get(cell, "")) if name == "status" else cell
            )
        self.out.print(table)

    def table(
        self,
        records: Sequence[Mapping[str, Any]],
        columns: Sequence[Column],
        *,
        noun: str,
        key: str = "id",
    ) -> None:
        if self.json_mode:
            self.json(list(records))
            return
        if self.quiet:
            self.ids(records, key)
            return
        rows = [[_cell(column.value(record)) for column in columns] for record in records]
        widths = _fit([column.header for column in columns], rows, columns, self.out.width)
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for column, width in zip(columns, widths, strict=True):
            table.add_column(
                column.header,
                no_wrap=True,
                overflow="ellipsis",
                justify=column.justify,  # type: ignore[arg-type]
                max_width=width,
            )
        for row in rows:
            table.add_row(
                *(
                    Text(cell, style=_STATUS_STYLES.get(cell, "")) if column.status else cell
                    for column, cell in zip(columns, row, strict=True)
                )
            )
        if records:
            self.out.print(table)
        plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
        self.message(f"{len(records)} {noun if len(records) == 1 else plural}")

    # -- errors ------------------------------------------------------------------------------
    def error(self, error: VoidVMError) -> None:
        if self.json_mode:
            payload = {
                "error": {
                    "code": error.code,
                    "message": error.message,
                    "details": error.details,
                    "status": error.status,
                    "request_id": error.request_id,
                }
            }
            typer.echo(json.dumps(payload, ensure_ascii=False, default=str), err=True)
            return
        self.err.print(
            error_line(error), style="red", markup=False, highlight=False, soft_wrap=True
        )

    # -- progress ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def spinner(self, text: str) -> Iterator[None]:
        """A spinner with the time elapsed, on stderr; hidden with ``--json``/``--quiet``."""
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.err,
            disable=self.json_mode or self.quiet or not self.err.is_terminal,
            transient=True,
        )
        with progress:
            progress.add_task(text, total=None)
            yield

    @contextlib.contextmanager
    def transfer(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A byte progress bar; yields ``advance(n)``. Hidden with ``--json``/``--quiet``."""
        disabled = self.json_mode or self.quiet
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            disable=disabled,
            transient=False,
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    @contextlib.contextmanager
    def operation(self, description: str) -> Iterator[Callable[[Mapping[str, Any]], None]]:
        """A bar fed with an operation's states (``progress`` 0-100, or none known: a pulse,
        and its ``message``); yields ``update(operation)``. On stderr while it is a terminal,
        hidden with ``--json``/``--quiet``."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.err,
            disable=self.json_mode or self.quiet or not self.err.is_terminal,
        )

        def update(operation: Mapping[str, Any]) -> None:
            percent = operation.get("progress")
            known = isinstance(percent, int) and not isinstance(percent, bool)
            parts = [f"{percent}%" if known else "", str(operation.get("message") or "")]
            progress.update(
                task,
                total=100 if known else None,
                completed=percent if known else 0,
                detail=" ".join(part for part in parts if part)[:40],
            )

        with progress:
            task = progress.add_task(description, total=None, detail="")
            yield update
