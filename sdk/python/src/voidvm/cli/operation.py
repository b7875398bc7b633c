"""``voidvm operation …`` (alias ``op``): long work the server records as an operation (VM
actions sent with ``--no-wait``, image imports from a URL, catalog pulls) to list, show, wait on
and cancel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from .._models import Operation
from ._output import Column, human_age
from ._params import JsonOpt, OperationArg, QuietOpt
from ._resolve import operation_id, resource_id
from ._state import CliState, begin

__all__ = ["OPERATION_COLUMNS", "app", "follow"]

app = typer.Typer(
    help="Long work: --no-wait VM actions, image imports and pulls (alias: op).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _percent(operation: Mapping[str, Any]) -> str | None:
    progress = operation.get("progress")
    return f"{progress}%" if isinstance(progress, int) and not isinstance(progress, bool) else None


OPERATION_COLUMNS = (
    Column("ID", lambda o: o.get("id")),
    Column("TYPE", lambda o: o.get("type")),
    Column("STATUS", lambda o: o.get("status"), status=True),
    Column("PROGRESS", _percent, justify="right"),
    Column("RESOURCE", lambda o: o.get("resource_id"), shrink=True),
    Column("AGE", lambda o: human_age(o.get("created_at")), justify="right"),
)


def follow(
    state: CliState, operation: Operation | str, description: str, timeout: float | None = None
) -> Operation:
    """Wait for an operation with a progress bar (on a terminal) and return how it ended.
    Ctrl-C stops watching, not the work: a notice says how to go on."""
    seen: list[Mapping[str, Any]] = [operation] if isinstance(operation, Operation) else []
    try:
        with state.output.operation(description) as update:

            def progressed(current: Operation) -> None:
                seen[:] = [current]
                update(current)

            return state.client().operations.wait(operation, timeout, on_progress=progressed)
    except KeyboardInterrupt:
        target = seen[0].get("id") if seen else operation
        hint = f"{target} goes on: `voidvm operation wait {target}` follows it"
        if seen and seen[0].get("cancellable"):
            hint += f", `voidvm operation cancel {target}` stops it"
        state.output.notice(hint)
        raise


@app.command("list")
def list_operations(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, running, succeeded, failed or cancelled.")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="e.g. vm.start or image.import.")
    ] = None,
    resource: Annotated[
        str | None, typer.Option(help="A VM or image it works on (name or id).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Newest N operations.", min=1, max=100)] = 20,
    page: Annotated[int, typer.Option(help="Page of N operations.", min=1)] = 1,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List operations, newest first (alias: ls). Yours; an admin sees everyone's."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    target = resource_id(client, resource) if resource else None
    result = client.operations.list_page(page, limit, status=status, type=type_, resource_id=target)
    state.output.table(result.items, OPERATION_COLUMNS, noun="operation")
    if result.has_next and not state.output.json_mode:
        state.output.message(f"More on --page {page + 1}")


app.command("ls", hidden=True)(list_operations)


@app.command("show")
def show(
    ctx: typer.Context, operation: OperationArg, json_: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show one operation: its status, progress, error or result."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    state.output.record(client.operations.get(operation_id(client, operation)))


@app.command("wait")
def wait(
    ctx: typer.Context,
    operation: OperationArg,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds before giving up (exit 10); default: no limit.", min=0),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Wait until an operation has finished, showing its progress. Exits non-zero, with its
    error, when it failed or was cancelled."""
    state = begin(ctx, json_, quiet)
    target = operation_id(state.client(), operation)
    done = follow(state, target, f"Waiting for {target}", timeout)
    if state.output.json_mode:
        state.output.json(done)
    done.raise_for_failure()
    state.output.message(f"{target}: {done.get('status')}")
    if state.output.quiet:
        state.output.ids([done])


@app.command("cancel")
def cancel(
    ctx: typer.Context, operation: OperationArg, json_: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Cancel a running image import or pull. VM actions cannot be cancelled."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    cancelled = client.operations.cancel(operation_id(client, operation))
    state.output.message(f"Cancelled {cancelled.get('id')} ({cancelled.get('type')})")
    if state.output.json_mode or state.output.quiet:
        state.output.record(cancelled)
