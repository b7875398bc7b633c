"""``voidvm audit``: the audit log (admins see everyone's entries, users their own)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._output import Column
from ._params import JsonOpt, QuietOpt
from ._state import begin

__all__ = ["AUDIT_COLUMNS", "audit"]

AUDIT_COLUMNS = (
    Column("TIME", lambda e: str(e.get("timestamp") or "")[:19].replace("T", " ")),
    Column("USER", lambda e: e.get("username"), shrink=True),
    Column("ACTION", lambda e: e.get("action")),
    Column("TARGET", lambda e: e.get("target_id")),
    Column("RESULT", lambda e: e.get("result")),
    Column("MESSAGE", lambda e: e.get("message"), shrink=True),
)


def audit(
    ctx: typer.Context,
    action: Annotated[str | None, typer.Option(help="e.g. vm.create.")] = None,
    user: Annotated[str | None, typer.Option(help="Admins: one user's id.")] = None,
    vm: Annotated[str | None, typer.Option(help="Entries about one VM id.")] = None,
    level: Annotated[str | None, typer.Option(help="info, warning or error.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time, e.g. 2026-12-01.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N entries.", min=1, max=500)] = 20,
    page: Annotated[int, typer.Option(help="Page of N entries.", min=1)] = 1,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show the audit log, newest first."""
    state = begin(ctx, json_, quiet)
    filters = {"action": action, "user": user, "vm": vm, "level": level, "from": since, "to": until}
    result = state.client().system.logs(
        page, limit, **{key: value for key, value in filters.items() if value is not None}
    )
    state.output.table(result.items, AUDIT_COLUMNS, noun="entry")
    if result.has_next and not state.output.json_mode:
        state.output.message(f"More on --page {page + 1}")
