"""The ``voidvm`` command: :func:`make_app` builds it around its dependencies."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from typer.core import TyperGroup

from .._errors import AuthenticationError, VoidVMError
from .._version import __version__
from . import image, system, vm
from ._config import StoredLogin
from ._exit_codes import ExitCode, exit_code_for
from ._output import Output
from ._params import JsonOpt
from ._state import CliDeps, CliState, state_of

__all__ = ["main", "make_app", "normalize_api_url"]

_HELP = (
    "Manage VoidVM virtual machines from the terminal. Exit codes: 0 ok, 1 error, "
    "2 usage or rejected input, 3 authentication, 4 not found, 5 conflict, "
    "6 forbidden or over quota, 7 rate limited, 8 server error, 9 connection, "
    "10 timed out waiting, 130 interrupted."
)


def normalize_api_url(url: str) -> str:
    """Accept ``http://host:3000`` as well as ``http://host:3000/api/v1``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    path = parts.path or "/api/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class _ErrorMappingGroup(TyperGroup):
    """Turns SDK errors raised by any command into a message and an exit code."""

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


def make_app(deps: CliDeps | None = None) -> typer.Typer:
    """Build the CLI. ``deps`` decides how clients are made and where the login is
    stored (tests pass a factory that injects an ``httpx.MockTransport``)."""
    resolved = deps or CliDeps()
    app = typer.Typer(
        cls=_ErrorMappingGroup,
        help=_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
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
        version: Annotated[
            bool,
            typer.Option("--version", callback=_print_version, is_eager=True, help="Show version."),
        ] = False,
    ) -> None:
        state = CliState(resolved, normalize_api_url(url) if url else None, token)
        ctx.obj = state
        ctx.call_on_close(state.close)

    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(vm.app, name="vm")
    app.add_typer(image.app, name="image")
    app.add_typer(system.app, name="system")
    return app


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", help="API base URL.")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u")] = None,
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="Prompted if omitted.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Log in and store the token in the user's config directory (mode 0600)."""
    state = state_of(ctx)
    state.output.json_mode = json_
    stored = state.stored()
    if url is None:
        url = state.url_override or typer.prompt("VoidVM API URL", default=state.url)
    base_url = normalize_api_url(url)
    if username is None:
        username = typer.prompt("Username", default=stored.username or "admin")
    if password is None:
        password = typer.prompt("Password", hide_input=True)
    client = state.deps.client_factory(base_url, None)
    try:
        with state.output.spinner(f"Logging in to {base_url}…"):
            result = client.auth.login(username, password)
    finally:
        client.close()
    state.store.save(StoredLogin(url=base_url, token=result.token, username=username))
    state.output.message(f"Logged in to {base_url} as {username} (saved to {state.store.path})")
    if json_:
        state.output.json({"url": base_url, "username": username, "user": result.get("user")})


def logout(ctx: typer.Context) -> None:
    """Revoke the stored token and forget it."""
    state = state_of(ctx)
    stored = state.stored()
    if stored.token is None:
        state.output.message("Not logged in.")
        return
    client = state.deps.client_factory(stored.url or state.url, stored.token)
    try:
        client.auth.logout()
    except AuthenticationError:
        pass  # already revoked or expired: forgetting it is all that is left
    finally:
        client.close()
    state.store.save(StoredLogin(url=stored.url, username=stored.username))
    state.output.message("Logged out.")


def main() -> None:
    """Console-script entry point."""
    make_app()(prog_name="voidvm")
