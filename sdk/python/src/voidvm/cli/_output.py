"""What the CLI prints: rich tables for people, ``--json`` for scripts, errors on stderr."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._errors import VoidVMError

__all__ = ["Output"]

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
}


def _status(value: Any) -> Text:
    text = "" if value is None else str(value)
    return Text(text, style=_STATUS_STYLES.get(text, ""))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # unreachable


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


class Output:
    """Printing for one CLI invocation."""

    def __init__(self, *, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)

    def json(self, data: Any) -> None:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))

    def message(self, text: str) -> None:
        """A human remark; silent with ``--json`` (stdout then holds only JSON)."""
        if not self.json_mode:
            self.err.print(text)

    @contextlib.contextmanager
    def spinner(self, text: str) -> Iterator[None]:
        with self.err.status(text, spinner="dots"):
            yield

    def record(self, data: Mapping[str, Any], title: str | None = None) -> None:
        if self.json_mode:
            self.json(data)
            return
        table = Table(title=title, show_header=False, box=None, pad_edge=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in _flatten(data):
            table.add_row(key, _status(value) if key == "status" else _cell(value))
        self.out.print(table)

    def vms(self, vms: Sequence[Mapping[str, Any]]) -> None:
        if self.json_mode:
            self.json(list(vms))
            return
        table = Table(title=None)
        for column in ("ID", "NAME", "STATUS", "CPU", "MEMORY", "DISK", "OS", "IP"):
            table.add_column(column, overflow="fold", no_wrap=column == "ID")
        for vm in vms:
            table.add_row(
                _cell(vm.get("id")),
                _cell(vm.get("name")),
                _status(vm.get("status")),
                _cell(vm.get("cpu")),
                f"{vm.get('memory', '-')} MB",
                f"{vm.get('disk', '-')} GB",
                _cell(vm.get("os") or vm.get("image")),
                _cell(vm.get("ip")),
            )
        self.out.print(table)
        self.message(f"{len(vms)} VM(s)")

    def images(self, images: Sequence[Mapping[str, Any]]) -> None:
        if self.json_mode:
            self.json(list(images))
            return
        table = Table()
        for column in ("ID", "NAME", "FORMAT", "STATUS", "SIZE", "DEFAULT", "ALIASES"):
            table.add_column(column, overflow="fold", no_wrap=column == "ID")
        for image in images:
            table.add_row(
                _cell(image.get("id")),
                _cell(image.get("name")),
                _cell(image.get("format")),
                _status(image.get("status")),
                _size(image.get("virtual_size_bytes") or image.get("size_bytes")),
                "yes" if image.get("is_default") else "",
                _cell(image.get("aliases")),
            )
        self.out.print(table)

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
        line = Text("Error: ", style="bold red")
        line.append(f"{error.message} ({error.code})")
        self.err.print(line)
        if isinstance(error.details, list):
            for item in error.details:
                if isinstance(item, Mapping):
                    field, reason = item.get("field", "?"), item.get("reason", "")
                    self.err.print(f"  {field}: {reason}", markup=False)
        elif error.details:
            self.err.print(f"  {error.details}", markup=False)
        if error.request_id:
            self.err.print(f"  request id: {error.request_id}", markup=False, style="dim")
