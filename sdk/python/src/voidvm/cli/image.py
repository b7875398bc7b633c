"""``voidvm image …``"""

from __future__ import annotations

import typer

from ._params import JsonOpt
from ._state import state_of

__all__ = ["app"]

app = typer.Typer(help="Disk, ISO and kernel images.", no_args_is_help=True)


@app.command("list")
def list_images(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the images VMs can be created from."""
    state = state_of(ctx)
    state.output.json_mode = json_
    state.output.images(state.client().images.list())
