"""Shell completion: the scripts for bash, zsh and fish, and names completed from the server.

Completion runs the ``voidvm`` command itself with ``_VOIDVM_COMPLETE`` set; the root
callback does not run then, so the callbacks here make their own client from ``--url``/
``--token``, the environment or the stored login. A server that cannot be reached, or a
missing login, completes nothing: completion never prints an error into the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import typer

from .._client import VoidVMClient
from ._state import CliDeps, CliState, normalize_api_url

__all__ = [
    "COMPLETE_VAR",
    "SHELLS",
    "complete_image",
    "complete_operation",
    "complete_token",
    "complete_user",
    "complete_vm",
    "completion_script",
    "register_shells",
]

COMPLETE_VAR = "_VOIDVM_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
#: Completion must stay snappy: a slow server completes nothing rather than hang the shell.
_COMPLETION_TIMEOUT = 3.0


def register_shells() -> None:
    """Typer registers its bash/zsh/fish completers only with its own --install-completion
    options, which this CLI replaces with ``voidvm completion SHELL``."""
    from typer._completion_classes import completion_init

    completion_init()


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="voidvm", complete_var=COMPLETE_VAR, shell=shell)


def _names(
    ctx: typer.Context,
    incomplete: str,
    fetch: Callable[[VoidVMClient], Iterable[Mapping[str, Any]]],
    name_key: str,
) -> list[str]:
    root = ctx.find_root()
    deps = root.obj if isinstance(root.obj, CliDeps) else CliDeps()
    url, token = root.params.get("url"), root.params.get("token")
    state = CliState(deps, normalize_api_url(url) if url else None, token)
    try:
        client = state.client()
        client._http.timeout = _COMPLETION_TIMEOUT
        records = list(fetch(client))
    except Exception:  # completion must never fail loudly
        return []
    finally:
        state.close()
    names = [str(r.get(name_key)) for r in records if r.get(name_key)]
    ids = [str(r.get("id")) for r in records if r.get("id")]
    chosen = names if not incomplete.startswith(("vm-", "img-", "usr-", "tok-")) else ids
    return sorted({value for value in chosen if value.startswith(incomplete)})


def complete_vm(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, lambda c: c.vms.list(), "name")


def complete_image(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, lambda c: c.images.list(), "name")


def complete_operation(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, lambda c: c.operations.list_page(1, 100).items, "id")


def complete_user(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, lambda c: c.users.list(), "username")


def complete_token(ctx: typer.Context, incomplete: str) -> list[str]:
    return _names(ctx, incomplete, lambda c: c.auth.tokens.list(), "name")
