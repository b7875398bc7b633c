"""``voidvm user …``: accounts, roles and quotas (admin)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from .._errors import ValidationError
from ._complete import complete_user
from ._output import Column
from ._params import JsonOpt, QuietOpt, UserArg, YesOpt
from ._resolve import user_id
from ._state import begin

__all__ = ["USER_COLUMNS", "app"]

app = typer.Typer(
    help="User accounts, roles and quotas (admin).", no_args_is_help=True, rich_markup_mode=None
)


def _usage(user: Mapping[str, Any]) -> str:
    usage, quota = user.get("usage") or {}, user.get("quota") or {}
    return f"{usage.get('vms', 0)}/{quota.get('max_vms', '-')}"


USER_COLUMNS = (
    Column("ID", lambda u: u.get("id")),
    Column("USERNAME", lambda u: u.get("username"), shrink=True),
    Column("ROLE", lambda u: u.get("role")),
    Column("STATUS", lambda u: u.get("status"), status=True),
    Column("VMS", _usage, justify="right"),
    Column("EMAIL", lambda u: u.get("email"), shrink=True),
)

MaxVms = Annotated[int | None, typer.Option("--max-vms", help="Quota: VMs.")]
MaxCpus = Annotated[int | None, typer.Option("--max-cpus", help="Quota: virtual CPUs.")]
MaxMemory = Annotated[int | None, typer.Option("--max-memory", help="Quota: memory in MB.")]
MaxDisk = Annotated[int | None, typer.Option("--max-disk", help="Quota: disk in GB.")]
Role = Annotated[str | None, typer.Option("--role", help="admin or user.")]


def _quota(
    vms: int | None, cpus: int | None, memory: int | None, disk: int | None
) -> dict[str, int]:
    given = {"max_vms": vms, "max_cpus": cpus, "max_memory_mb": memory, "max_disk_gb": disk}
    return {key: value for key, value in given.items() if value is not None}


@app.command("list")
def list_users(ctx: typer.Context, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List users (alias: ls)."""
    state = begin(ctx, json_, quiet)
    state.output.table(state.client().users.list(), USER_COLUMNS, noun="user")


app.command("ls", hidden=True)(list_users)


@app.command("show")
def show(
    ctx: typer.Context, user: UserArg, json_: JsonOpt = False, quiet: QuietOpt = False
) -> None:
    """Show a user with their quota and usage."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    state.output.record(client.users.get(user_id(client, user)))


@app.command("create")
def create(
    ctx: typer.Context,
    username: Annotated[str, typer.Argument(help="3-64 characters.")],
    password: Annotated[str | None, typer.Option(help="Prompted if omitted.")] = None,
    email: Annotated[str | None, typer.Option(help="Contact address.")] = None,
    role: Role = None,
    max_vms: MaxVms = None,
    max_cpus: MaxCpus = None,
    max_memory: MaxMemory = None,
    max_disk: MaxDisk = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a user."""
    state = begin(ctx, json_, quiet)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    quota = _quota(max_vms, max_cpus, max_memory, max_disk)
    created = state.client().users.create(
        username=username, password=password, email=email, role=role, quota=quota or None
    )
    state.output.message(f"Created user {created.username} ({created.id})")
    state.output.record(created)


@app.command("update")
def update(
    ctx: typer.Context,
    user: UserArg,
    email: Annotated[str | None, typer.Option(help="Contact address.")] = None,
    role: Role = None,
    enable: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Let them log in, or not.")
    ] = None,
    max_vms: MaxVms = None,
    max_cpus: MaxCpus = None,
    max_memory: MaxMemory = None,
    max_disk: MaxDisk = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Change a user's email, role, status or quota."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    changes: dict[str, Any] = {"email": email, "role": role}
    if enable is not None:
        changes["status"] = "active" if enable else "disabled"
    quota = _quota(max_vms, max_cpus, max_memory, max_disk)
    if quota:
        changes["quota"] = quota
    changes = {key: value for key, value in changes.items() if value is not None}
    if not changes:
        raise ValidationError(
            "nothing to change: give at least one option", code="NOTHING_TO_CHANGE"
        )
    updated = client.users.update(user_id(client, user), changes)
    state.output.message(f"Updated user {updated.username}")
    state.output.record(updated)


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    user: UserArg,
    password: Annotated[str | None, typer.Option(help="Prompted if omitted.")] = None,
) -> None:
    """Set another user's password."""
    state = begin(ctx)
    client = state.client()
    target = user_id(client, user)
    if password is None:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    client.users.update(target, {"password": password})
    state.output.message(f"Password of {user} changed.")


@app.command("delete")
def delete(
    ctx: typer.Context,
    users: Annotated[
        list[str], typer.Argument(help="Usernames or ids.", autocompletion=complete_user)
    ],
    yes: YesOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete users (alias: rm)."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    targets = [(ref, user_id(client, ref)) for ref in users]
    if not yes and not typer.confirm(f"Delete {', '.join(users)}?", default=False):
        raise typer.Exit(1)
    for ref, target in targets:
        client.users.delete(target)
        state.output.message(f"Deleted user {ref}")
    if state.output.json_mode:
        state.output.json([{"id": target, "deleted": True} for _, target in targets])
    elif state.output.quiet:
        state.output.ids([{"id": target} for _, target in targets])


app.command("rm", hidden=True)(delete)
