"""``voidvm system …``"""

from __future__ import annotations

import typer

from ._params import JsonOpt
from ._state import state_of

__all__ = ["app"]

app = typer.Typer(help="Server information.", no_args_is_help=True)


@app.command("info")
def info(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Version, host, resources, QEMU and accelerator."""
    state = state_of(ctx)
    state.output.json_mode = json_
    state.output.record(state.client().system.info(), title=state.url)
