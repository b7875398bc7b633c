"""``voidvm token …``: the caller's personal API tokens, for scripts and CI."""

from __future__ import annotations

from typing import Annotated

import typer

from ._complete import complete_token
from ._output import Column
from ._params import JsonOpt, QuietOpt, YesOpt
from ._resolve import token_id
from ._state import begin

__all__ = ["TOKEN_COLUMNS", "app"]

app = typer.Typer(help="Personal API tokens.", no_args_is_help=True, rich_markup_mode=None)

TOKEN_COLUMNS = (
    Column("ID", lambda t: t.get("id")),
    Column("NAME", lambda t: t.get("name"), shrink=True),
    Column("PREFIX", lambda t: t.get("prefix")),
    Column("EXPIRES", lambda t: (t.get("expires_at") or "never")[:10]),
    Column("LAST USED", lambda t: (t.get("last_used_at") or "never")[:10]),
)


@app.command("list")
def list_tokens(ctx: typer.Context, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List your API tokens (alias: ls)."""
    state = begin(ctx, json_, quiet)
    state.output.table(state.client().auth.tokens.list(), TOKEN_COLUMNS, noun="token")


app.command("ls", hidden=True)(list_tokens)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", help="Default: never.", min=1)
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a token and print its secret (shown only this once)."""
    state = begin(ctx, json_, quiet)
    created = state.client().auth.tokens.create(name, expires_in_days=expires_in_days)
    if state.output.json_mode:
        state.output.json(created)
        return
    state.output.message(f"Created token {created.name} ({created.id}); it is shown only once:")
    typer.echo(created.token)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    tokens: Annotated[
        list[str], typer.Argument(help="Token names or ids.", autocompletion=complete_token)
    ],
    yes: YesOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Revoke tokens (alias: rm)."""
    state = begin(ctx, json_)
    client = state.client()
    targets = [(ref, token_id(client, ref)) for ref in tokens]
    if not yes and not typer.confirm(f"Revoke {', '.join(tokens)}?", default=False):
        raise typer.Exit(1)
    for ref, target in targets:
        client.auth.tokens.revoke(target)
        state.output.message(f"Revoked {ref}")
    if state.output.json_mode:
        state.output.json([{"id": target, "revoked": True} for _, target in targets])


app.command("rm", hidden=True)(revoke)
