"""``voidvm vm …``: every VM command. A VM is named by its name or its id."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer

from .._client import VoidVMClient
from .._errors import ConflictError, ValidationError
from .._models import VM
from ._complete import complete_vm
from ._output import Column
from ._params import ActionWaitOpt, JsonOpt, QuietOpt, VmArg, WaitOpt, YesOpt
from ._resolve import vm_id
from ._state import CliState, begin
from ._terminal import run_console

__all__ = ["VM_COLUMNS", "app"]

app = typer.Typer(help="Virtual machines.", no_args_is_help=True, rich_markup_mode=None)


def _ssh(vm: Mapping[str, Any]) -> Any:
    return (vm.get("ports") or {}).get("ssh")


VM_COLUMNS = (
    Column("ID", lambda v: v.get("id")),
    Column("NAME", lambda v: v.get("name"), shrink=True),
    Column("STATUS", lambda v: v.get("status"), status=True),
    Column("OWNER", lambda v: v.get("owner"), shrink=True),
    Column("CPU", lambda v: v.get("cpu"), justify="right"),
    Column("MEM", lambda v: f"{v['memory']}M" if v.get("memory") else None, justify="right"),
    Column("DISK", lambda v: f"{v['disk']}G" if v.get("disk") else None, justify="right"),
    Column("SSH", _ssh, justify="right"),
)

_ACTIONS = {
    "start": ("Starting", "running"),
    "stop": ("Stopping", "stopped"),
    "restart": ("Restarting", "running"),
    "pause": ("Pausing", "paused"),
    "resume": ("Resuming", "running"),
    "reset": ("Resetting", "running"),
}


def _show(state: CliState, vm: Mapping[str, Any]) -> None:
    state.output.record(vm)


def _each(
    state: CliState,
    refs: list[str],
    action: str,
    call: Callable[[VoidVMClient, str], VM],
    wait: bool,
) -> None:
    """Run one action on each VM in turn; the first failure stops the rest (and exits)."""
    client = state.client()
    doing, _ = _ACTIONS[action]
    done: list[VM] = []
    shown: list[Mapping[str, Any]] = []  # --quiet: the VM's id, or its operation's (--no-wait)
    for ref in refs:
        target = vm_id(client, ref)
        with state.output.spinner(f"{doing} {ref}…") if wait else contextlib.nullcontext():
            vm = call(client, target)
        done.append(vm)
        accepted = vm.get("operation")
        if isinstance(accepted, Mapping) and accepted.get("id"):
            shown.append(accepted)
            state.output.message(f"{ref}: {vm.get('status')}, operation {accepted['id']}")
        else:
            shown.append(vm)
            state.output.message(f"{ref}: {vm.get('status')}")
    if state.output.json_mode:
        state.output.json(done if len(done) > 1 else done[0])
    elif state.output.quiet:
        state.output.ids(shown)


VmsArg = Annotated[
    list[str],
    typer.Argument(help="VM names or ids.", show_default=False, autocompletion=complete_vm),
]


@app.command("list")
def list_vms(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only these statuses (a,b).")] = None,
    search: Annotated[str | None, typer.Option(help="Match name or description.")] = None,
    owner: Annotated[str | None, typer.Option(help="Admins: one owner's VMs.")] = None,
    sort: Annotated[str | None, typer.Option(help="e.g. name or -created_at.")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List VMs (alias: ls)."""
    state = begin(ctx, json_, quiet)
    vms = state.client().vms.list(status=status, search=search, sort=sort, owner=owner)
    state.output.table(vms, VM_COLUMNS, noun="VM")


app.command("ls", hidden=True)(list_vms)


@app.command("show")
def show(ctx: typer.Context, vm: VmArg, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Show one VM."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    _show(state, client.vms.get(vm_id(client, vm)))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="VM name (letters, digits, - _ .).")],
    cpu: Annotated[int, typer.Option(help="Virtual CPUs.")] = 1,
    memory: Annotated[int, typer.Option(help="Memory in MB.")] = 1024,
    disk: Annotated[int, typer.Option(help="Disk in GB.")] = 10,
    os_: Annotated[str | None, typer.Option("--os", help="Image name or alias.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start it once created.")] = False,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Create a VM (and start it with --start)."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    spec: dict[str, Any] = {"name": name, "cpu": cpu, "memory": memory, "disk": disk}
    with state.output.spinner(f"Creating {name}…"):
        vm = client.vms.create(spec, os=os_, description=description, auto_start=start or None)
        if wait:
            target = "running" if start else "stopped"
            vm = client.vms.wait_for(vm.id, target, timeout=600)
    state.output.message(f"Created {vm.get('name')} ({vm.get('id')}, {vm.get('status')})")
    _show(state, vm)


def _changes(**fields: Any) -> dict[str, Any]:
    changes = {key: value for key, value in fields.items() if value is not None}
    if not changes:
        raise ValidationError(
            "nothing to change: give at least one option", code="NOTHING_TO_CHANGE"
        )
    return changes


@app.command("update")
def update(
    ctx: typer.Context,
    vm: VmArg,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    cpu: Annotated[int | None, typer.Option(help="Virtual CPUs (VM stopped).")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory in MB (VM stopped).")] = None,
    disk: Annotated[int | None, typer.Option(help="Disk in GB; grows only.")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rename a VM, change its description or its hardware."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    changes = _changes(name=name, description=description, cpu=cpu, memory=memory, disk=disk)
    updated = client.vms.update(vm_id(client, vm), changes)
    state.output.message(f"Updated {updated.get('name')}")
    _show(state, updated)


@app.command("resize")
def resize(
    ctx: typer.Context,
    vm: VmArg,
    cpu: Annotated[int | None, typer.Option(help="Virtual CPUs.")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory in MB.")] = None,
    disk: Annotated[int | None, typer.Option(help="Disk in GB; grows only.")] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Change a VM's CPUs, memory or disk size (CPU and memory need it stopped)."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    updated = client.vms.update(vm_id(client, vm), _changes(cpu=cpu, memory=memory, disk=disk))
    state.output.message(
        f"{updated.get('name')}: {updated.get('cpu')} CPU, {updated.get('memory')} MB, "
        f"{updated.get('disk')} GB"
    )
    _show(state, updated)


@app.command("start")
def start(
    ctx: typer.Context, vms: VmsArg, wait: ActionWaitOpt = True, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Start stopped VMs."""
    state = begin(ctx, json_, quiet)
    _each(state, vms, "start", lambda c, i: c.vms.start(i, wait=wait), wait)


@app.command("stop")
def stop(
    ctx: typer.Context,
    vms: VmsArg,
    force: Annotated[bool, typer.Option("--force", help="Kill at once, no ACPI.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for ACPI power-off before killing.")
    ] = None,
    wait: ActionWaitOpt = True,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Stop VMs (ACPI power-off, then kill after the timeout)."""
    state = begin(ctx, json_, quiet)
    _each(
        state,
        vms,
        "stop",
        lambda c, i: c.vms.stop(i, force=force, timeout=timeout, wait=wait),
        wait,
    )


@app.command("restart")
def restart(
    ctx: typer.Context,
    vms: VmsArg,
    force: Annotated[bool, typer.Option("--force", help="Hard reset instead of ACPI.")] = False,
    wait: ActionWaitOpt = True,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restart running VMs."""
    state = begin(ctx, json_, quiet)
    _each(state, vms, "restart", lambda c, i: c.vms.restart(i, force=force, wait=wait), wait)


@app.command("pause")
def pause(
    ctx: typer.Context, vms: VmsArg, wait: ActionWaitOpt = True, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Pause running VMs (their memory stays)."""
    state = begin(ctx, json_, quiet)
    _each(state, vms, "pause", lambda c, i: c.vms.pause(i, wait=wait), wait)


@app.command("resume")
def resume(
    ctx: typer.Context, vms: VmsArg, wait: ActionWaitOpt = True, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Resume paused VMs."""
    state = begin(ctx, json_, quiet)
    _each(state, vms, "resume", lambda c, i: c.vms.resume(i, wait=wait), wait)


@app.command("reset")
def reset(
    ctx: typer.Context, vms: VmsArg, wait: ActionWaitOpt = True, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:  # fmt: skip
    """Hard-reset running VMs (like pressing the reset button)."""
    state = begin(ctx, json_, quiet)
    _each(state, vms, "reset", lambda c, i: c.vms.reset(i, wait=wait), wait)


@app.command("delete")
def delete(
    ctx: typer.Context,
    vms: VmsArg,
    force: Annotated[bool, typer.Option("--force", help="Stop running VMs first.")] = False,
    yes: YesOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete VMs and their disks (alias: rm)."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    targets = [(ref, vm_id(client, ref)) for ref in vms]
    names = ", ".join(ref for ref, _ in targets)
    if not yes and not typer.confirm(f"Delete {names} and their disks?", default=False):
        raise typer.Exit(1)
    for ref, target in targets:
        with state.output.spinner(f"Deleting {ref}…"):
            client.vms.delete(target, force=force)
        state.output.message(f"Deleted {ref}")
    if state.output.json_mode:
        state.output.json([{"id": target, "deleted": True} for _, target in targets])
    elif state.output.quiet:
        state.output.ids([{"id": target} for _, target in targets])


app.command("rm", hidden=True)(delete)


@app.command("status")
def status(ctx: typer.Context, vm: VmArg, json_: JsonOpt = False) -> None:
    """The hypervisor's live view: QEMU state, pid, uptime."""
    state = begin(ctx, json_)
    client = state.client()
    state.output.record(client.vms.status(vm_id(client, vm)))


@app.command("metrics")
def metrics(ctx: typer.Context, vm: VmArg, json_: JsonOpt = False) -> None:
    """Current CPU, memory, disk and network use."""
    state = begin(ctx, json_)
    client = state.client()
    state.output.record(client.vms.metrics(vm_id(client, vm)))


@app.command("log")
def log(
    ctx: typer.Context,
    vm: VmArg,
    tail: Annotated[int | None, typer.Option(help="Only the last N bytes.", min=1)] = None,
    json_: JsonOpt = False,
) -> None:
    """Print the VM's saved serial console output (boot messages included)."""
    state = begin(ctx, json_)
    client = state.client()
    saved = client.vms.console_log(vm_id(client, vm), tail=tail)
    if state.output.json_mode:
        state.output.json(saved)
        return
    if saved.get("truncated"):
        state.output.message(f"(the last {len(saved.log.encode())} of {saved.size} bytes)")
    sys.stdout.write(saved.log)
    sys.stdout.flush()


@app.command("wait")
def wait_for(
    ctx: typer.Context,
    vm: VmArg,
    status: Annotated[str, typer.Argument(help="Target status, or several: running,error.")],
    timeout: Annotated[float, typer.Option(help="Seconds before giving up (exit 10).")] = 300,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Wait until a VM reaches a status."""
    state = begin(ctx, json_, quiet)
    client = state.client()
    wanted = [part for part in status.split(",") if part]
    fail_on = () if "error" in wanted else ("error",)
    with state.output.spinner(f"Waiting for {vm} to be {status}…"):
        reached = client.vms.wait_for(vm_id(client, vm), wanted, timeout=timeout, fail_on=fail_on)
    state.output.message(f"{vm}: {reached.get('status')}")
    if state.output.json_mode or state.output.quiet:
        _show(state, reached)


@app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(
    ctx: typer.Context,
    vm: VmArg,
    user: Annotated[str | None, typer.Option("--user", "-l", help="Guest user.")] = None,
) -> None:
    """Open an SSH session to the VM through its forwarded port (extra arguments go to ssh).
    Runs on the server's host: the port listens on its loopback."""
    state = begin(ctx)
    client = state.client()
    found = client.vms.get(vm_id(client, vm))
    port = _ssh(found)
    if not port:
        raise ConflictError(
            f"{found.get('name')} has no SSH port: it is {found.get('status')}, or its image "
            "runs no SSH server (use `voidvm vm console`)",
            code="NO_SSH_PORT",
        )
    binary = shutil.which("ssh")
    if binary is None:
        raise ValidationError("the ssh command is not installed", code="NO_SSH_CLIENT")
    login = user or _default_user(client, found)
    argv = ["ssh", "-p", str(port), "-o", "HostKeyAlias=" + str(found.get("id")), *ctx.args]
    os.execv(binary, [*argv, f"{login}@127.0.0.1"])  # noqa: S606 (the user asked for ssh)


def _default_user(client: VoidVMClient, vm: Mapping[str, Any]) -> str:
    image = vm.get("image")
    if image:
        found = client.images.get(str(image))
        if found.get("default_user"):
            return str(found["default_user"])
    return "root"


@app.command("console")
def console(
    ctx: typer.Context,
    vm: VmArg,
    linger: Annotated[
        float,
        typer.Option(
            "--linger",
            min=0,
            metavar="SECONDS",
            help="When input ends (a pipe, a file, </dev/null), keep showing output until "
            "the guest has been quiet this long, then exit 0.",
        ),
    ] = 1.0,
) -> None:
    """Attach to the VM's serial console (Ctrl-] detaches). Input may be a terminal, a
    pipe, a file or nothing: `echo uname -a | voidvm vm console web` prints the answer."""
    state = begin(ctx)
    try:
        stdin_fd = sys.stdin.fileno()
        stdout = sys.stdout.buffer
    except (AttributeError, OSError, ValueError) as exc:
        raise ValidationError(
            "the console needs stdin and stdout (a terminal, a pipe or a file)", code="NO_TERMINAL"
        ) from exc
    target = vm_id(state.client(), vm)
    asyncio.run(run_console(state.async_client(), target, stdin_fd, stdout, linger=linger))
