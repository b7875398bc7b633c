"""The ``voidvm`` command: :func:`make_app` builds it around its dependencies."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .._errors import VoidVMError
from .._version import __version__
from . import account, audit, image, operation, server_config, system, token, user, vm
from ._complete import SHELLS, completion_script, register_shells
from ._exit_codes import ExitCode, exit_code_for
from ._output import Output
from ._state import CliDeps, CliState, normalize_api_url

__all__ = ["main", "make_app", "normalize_api_url"]

_HELP = (
    "Manage VoidVM virtual machines from the terminal. VMs, images, users and tokens are "
    "named by name or id. Exit codes: 0 ok, 1 error, 2 usage or rejected input, "
    "3 authentication, 4 not found, 5 conflict, 6 forbidden or over quota, 7 rate limited, "
    "8 server error, 9 connection, 10 timed out waiting, 130 interrupted. Long work (--no-wait "
    "actions, URL imports) is an operation: see `voidvm operation`."
)


class _ErrorMappingGroup(TyperGroup):
    """Turns SDK errors raised by any command into one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VoidVMError as error:
            state = ctx.obj if isinstance(ctx.obj, CliState) else None
            (state.output if state else Output()).error(error)
            raise typer.Exit(int(exit_code_for(error))) from None
        except KeyboardInterrupt:
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"voidvm {__version__}")
        raise typer.Exit()


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print the shell completion script. bash: `source <(voidvm completion bash)`; zsh:
    `voidvm completion zsh > "${fpath[1]}/_voidvm"`; fish: `voidvm completion fish >
    ~/.config/fish/completions/voidvm.fish`."""
    if shell not in SHELLS:
        raise typer.BadParameter(f"choose one of {', '.join(SHELLS)}", param_hint="SHELL")
    typer.echo(completion_script(shell))


def make_app(deps: CliDeps | None = None) -> typer.Typer:
    """Build the CLI. ``deps`` decides how clients are made and where the login is
    stored (tests pass a factory that injects an ``httpx.MockTransport``)."""
    resolved = deps or CliDeps()
    register_shells()
    app = typer.Typer(
        cls=_ErrorMappingGroup,
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
        # Shell completion runs without the root callback: it finds the deps here.
        context_settings={"obj": resolved, "max_content_width": 80},
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        url: Annotated[
            str | None,
            typer.Option("--url", envvar="VOIDVM_URL", help="API base URL.", show_default=False),
        ] = None,
        token: Annotated[
            str | None,
            typer.Option("--token", envvar="VOIDVM_TOKEN", help="Bearer or API token."),
        ] = None,
        json_: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Ids only.")] = False,
        version: Annotated[
            bool,
            typer.Option("--version", callback=_print_version, is_eager=True, help="Show version."),
        ] = False,
    ) -> None:
        state = CliState(resolved, normalize_api_url(url) if url else None, token)
        state.output.json_mode, state.output.quiet = json_, quiet
        ctx.obj = state
        ctx.call_on_close(state.close)

    account.register(app)
    app.add_typer(vm.app, name="vm")
    app.add_typer(image.app, name="image")
    app.add_typer(operation.app, name="operation")
    app.add_typer(operation.app, name="op", hidden=True)
    app.add_typer(user.app, name="user")
    app.add_typer(token.app, name="token")
    app.add_typer(server_config.app, name="config")
    app.command("audit")(audit.audit)
    app.add_typer(system.app, name="system")
    app.command("completion")(completion)
    return app


def main() -> None:
    """Console-script entry point."""
    make_app()(prog_name="voidvm")
