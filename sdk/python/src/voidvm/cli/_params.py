"""Option and argument types shared by the commands."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["JsonOpt", "VmIdArg", "WaitOpt", "YesOpt"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
VmIdArg = Annotated[str, typer.Argument(help="The VM id (vm-…).", show_default=False)]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="Wait until the VM reaches the target state."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
