"""``voidvm login``, ``logout``, ``whoami`` and ``passwd``: the caller's own account."""

from __future__ import annotations

from typing import Annotated

import typer

from .._errors import AuthenticationError, ValidationError
from ._config import StoredLogin, stored_login
from ._params import JsonOpt, QuietOpt
from ._state import begin, normalize_api_url, state_of

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
    app.command("passwd")(passwd)


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
    state = begin(ctx, json_)
    stored = state.stored()
    if url is None:
        url = state.url_override or typer.prompt("VoidVM API URL", default=state.url)
    base_url = normalize_api_url(url)
    if username is None:
        username = typer.prompt("Username", default=stored.username or "admin")
    if password is None:
        password = typer.prompt("Password", hide_input=True)
    client = state.deps.client_factory(base_url, None)
    client.on_rate_limit = state.output.rate_limited
    try:
        with state.output.spinner(f"Logging in to {base_url}…"):
            result = client.auth.login(username, password)
    finally:
        client.close()
    state.store.save(stored_login(base_url, username, result))
    state.output.message(f"Logged in to {base_url} as {username} (saved to {state.store.path})")
    if state.output.json_mode:
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


def whoami(ctx: typer.Context, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show the account the token belongs to, its role and quota."""
    state = begin(ctx, json_, quiet)
    state.output.record(state.client().auth.me(), title=state.url)


def passwd(
    ctx: typer.Context,
    current: Annotated[str | None, typer.Option("--current", help="Prompted if omitted.")] = None,
    new: Annotated[str | None, typer.Option("--new", help="Prompted if omitted.")] = None,
) -> None:
    """Change your own password (an admin sets another user's with `voidvm user passwd`)."""
    state = state_of(ctx)
    if current is None:
        current = typer.prompt("Current password", hide_input=True)
    if new is None:
        new = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    if not new:
        raise ValidationError("the new password is empty", code="VALIDATION_ERROR")
    state.client().auth.change_password(current, new)
    state.output.message("Password changed.")
