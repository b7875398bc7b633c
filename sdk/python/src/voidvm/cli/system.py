"""``voidvm system …``: what the server is and how it is doing."""

from __future__ import annotations

from typing import Annotated

import typer

from ._params import JsonOpt
from ._state import begin

__all__ = ["app"]

app = typer.Typer(help="Server information.", no_args_is_help=True, rich_markup_mode=None)


@app.command("info")
def info(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Version, host, resources, QEMU and accelerator."""
    state = begin(ctx, json_)
    state.output.record(state.client().system.info(), title=state.url)


@app.command("version")
def version(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """The server's and the API's version."""
    state = begin(ctx, json_)
    state.output.record(state.client().system.version())


@app.command("stats")
def stats(
    ctx: typer.Context,
    period: Annotated[str, typer.Option(help="1h, 24h, 7d or 30d.")] = "1h",
    json_: JsonOpt = False,
) -> None:
    """VM counts by state and recent activity."""
    state = begin(ctx, json_)
    state.output.record(state.client().system.stats(period))


@app.command("health")
def health(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Whether the server answers and its database is ready."""
    state = begin(ctx, json_)
    state.output.record(state.client().system.ready())
