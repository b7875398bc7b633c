"""``voidvm config …``: the server's live settings (rate limits, default quota, VM bounds,
default image, restart policy). Reading is for everyone, changing for admins; a change
takes effect at once, without a restart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from .._errors import NotFoundError, ValidationError
from ._params import JsonOpt
from ._state import begin

__all__ = ["app", "parse_value", "patch_for"]

app = typer.Typer(help="The server's live settings.", no_args_is_help=True, rich_markup_mode=None)

KeyArg = Annotated[str, typer.Argument(help="A dotted key, e.g. rate_limits.default.")]


def parse_value(text: str) -> Any:
    """``10`` → 10, ``true`` → True, ``{"a": 1}`` → a dict; anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def patch_for(key: str, value: Any) -> dict[str, Any]:
    """``rate_limits.per_user.alice`` = v → ``{"rate_limits": {"per_user": {"alice": v}}}``."""
    parts = [part for part in key.split(".") if part]
    if not parts:
        raise ValidationError("the key is empty", code="VALIDATION_ERROR")
    patch: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        patch = {part: patch}
    return patch


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise NotFoundError(
                f"no setting is named {key!r}", code="SETTING_NOT_FOUND", status=404
            )
        value = value[part]
    return value


@app.command("show")
def show(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Show every setting."""
    state = begin(ctx, json_)
    state.output.record(state.client().system.get_config())


@app.command("get")
def get(ctx: typer.Context, key: KeyArg, json_: JsonOpt = False) -> None:
    """Print one setting (JSON for sections)."""
    state = begin(ctx, json_)
    value = _lookup(state.client().system.get_config(), key)
    if state.output.json_mode or isinstance(value, Mapping | list):
        state.output.json(value)
    else:
        typer.echo(str(value))


@app.command("set")
def set_(
    ctx: typer.Context,
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="The new value; JSON is parsed (10, true, {…}).")],
    json_: JsonOpt = False,
) -> None:
    """Change one setting (admin), e.g. `voidvm config set rate_limits.per_user.alice 20/minute`."""
    state = begin(ctx, json_)
    updated = state.client().system.update_config(patch_for(key, parse_value(value)))
    state.output.message(f"{key} = {json.dumps(_lookup(updated, key))}")
    if state.output.json_mode:
        state.output.json(updated)
