"""Option and argument types shared by the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from ._complete import complete_image, complete_token, complete_user, complete_vm

__all__ = ["ImageArg", "JsonOpt", "QuietOpt", "TokenArg", "UserArg", "VmArg", "WaitOpt", "YesOpt"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print ids only.")]
VmArg = Annotated[
    str, typer.Argument(help="VM name or id.", show_default=False, autocompletion=complete_vm)
]
ImageArg = Annotated[
    str, typer.Argument(help="Image name or id.", show_default=False, autocompletion=complete_image)
]
UserArg = Annotated[
    str, typer.Argument(help="Username or id.", show_default=False, autocompletion=complete_user)
]
TokenArg = Annotated[
    str, typer.Argument(help="Token name or id.", show_default=False, autocompletion=complete_token)
]
WaitOpt = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="Wait until the VM reaches the target state."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
