"""Option and argument types shared by the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from ._complete import (
    complete_image,
    complete_operation,
    complete_token,
    complete_user,
    complete_vm,
)

__all__ = [
    "ActionWaitOpt",
    "ImageArg",
    "JsonOpt",
    "OperationArg",
    "QuietOpt",
    "TokenArg",
    "UserArg",
    "VmArg",
    "WaitOpt",
    "YesOpt",
]

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
OperationArg = Annotated[
    str,
    typer.Argument(
        help="Operation id (or a unique prefix).", show_default=False,
        autocompletion=complete_operation,
    ),
]  # fmt: skip
WaitOpt = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="Wait until the VM reaches the target state."),
]
ActionWaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Wait until the VM reaches the target state, or print the id of the operation "
        "finishing the action.",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
