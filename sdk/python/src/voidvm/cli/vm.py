"""``voidvm vm …``"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import typer

from .._errors import ValidationError
from .._models import VM
from ._params import JsonOpt, VmIdArg, WaitOpt, YesOpt
from ._state import CliState, state_of
from ._terminal import run_console

__all__ = ["app"]

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)

_PROGRESS = {
    "start": "Starting",
    "stop": "Stopping",
    "restart": "Restarting",
    "pause": "Pausing",
    "resume": "Resuming",
    "reset": "Resetting",
}


def _begin(ctx: typer.Context, json_mode: bool) -> CliState:
    state = state_of(ctx)
    state.output.json_mode = json_mode
    return state


def _show(state: CliState, vm: VM) -> None:
    if state.output.json_mode:
        state.output.json(vm)
    else:
        state.output.record(vm)


def _run_action(
    state: CliState, vm_id: str, action: str, call: Callable[[], VM], wait: bool
) -> None:
    waiting = state.output.spinner(f"{_PROGRESS[action]} {vm_id}…")
    with waiting if wait else contextlib.nullcontext():
        vm = call()
    state.output.message(f"{vm.get('id', vm_id)}: {vm.get('status')}")
    if state.output.json_mode:
        state.output.json(vm)


@app.command("list")
def list_vms(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="Only VMs in this status.")] = None,
    search: Annotated[str | None, typer.Option(help="Match name or description.")] = None,
    sort: Annotated[str | None, typer.Option(help="Sort key, e.g. name or -created_at.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List VMs (all pages)."""
    state = _begin(ctx, json_)
    state.output.vms(state.client().vms.list(status=status, search=search, sort=sort))


@app.command("show")
def show(ctx: typer.Context, vm_id: VmIdArg, json_: JsonOpt = False) -> None:
    """Show one VM."""
    state = _begin(ctx, json_)
    _show(state, state.client().vms.get(vm_id))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="VM name (letters, digits, - _ .).")],
    cpu: Annotated[int, typer.Option(help="Virtual CPUs.")] = 1,
    memory: Annotated[int, typer.Option(help="Memory in MB.")] = 1024,
    disk: Annotated[int, typer.Option(help="Disk in GB.")] = 10,
    os: Annotated[str | None, typer.Option("--os", help="Image name or alias.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start it once created.")] = False,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
) -> None:
    """Create a VM."""
    state = _begin(ctx, json_)
    client = state.client()
    spec: dict[str, Any] = {"name": name, "cpu": cpu, "memory": memory, "disk": disk}
    with state.output.spinner(f"Creating {name}…"):
        vm = client.vms.create(spec, os=os, description=description, auto_start=start or None)
        if wait:
            target = "running" if start else "stopped"
            vm = client.vms.wait_for(vm.id, target, timeout=600)
    state.output.message(f"Created {vm.get('id')} ({vm.get('status')})")
    _show(state, vm)


@app.command("start")
def start(ctx: typer.Context, vm_id: VmIdArg, wait: WaitOpt = True, json_: JsonOpt = False) -> None:
    """Start a stopped VM."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.start, vm_id, wait=wait)
    _run_action(state, vm_id, "start", call, wait)


@app.command("stop")
def stop(
    ctx: typer.Context,
    vm_id: VmIdArg,
    force: Annotated[bool, typer.Option("--force", help="Kill at once, no ACPI.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for ACPI power-off before killing.")
    ] = None,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
) -> None:
    """Stop a VM (ACPI power-off, then kill after the timeout)."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.stop, vm_id, force=force, timeout=timeout, wait=wait)
    _run_action(state, vm_id, "stop", call, wait)


@app.command("restart")
def restart(
    ctx: typer.Context,
    vm_id: VmIdArg,
    force: Annotated[bool, typer.Option("--force", help="Hard reset instead of ACPI.")] = False,
    wait: WaitOpt = True,
    json_: JsonOpt = False,
) -> None:
    """Restart a running VM."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.restart, vm_id, force=force, wait=wait)
    _run_action(state, vm_id, "restart", call, wait)


@app.command("pause")
def pause(ctx: typer.Context, vm_id: VmIdArg, wait: WaitOpt = True, json_: JsonOpt = False) -> None:
    """Pause a running VM."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.pause, vm_id, wait=wait)
    _run_action(state, vm_id, "pause", call, wait)


@app.command("resume")
def resume(
    ctx: typer.Context, vm_id: VmIdArg, wait: WaitOpt = True, json_: JsonOpt = False
) -> None:
    """Resume a paused VM."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.resume, vm_id, wait=wait)
    _run_action(state, vm_id, "resume", call, wait)


@app.command("delete")
def delete(
    ctx: typer.Context,
    vm_id: VmIdArg,
    force: Annotated[bool, typer.Option("--force", help="Stop it first if running.")] = False,
    yes: YesOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Delete a VM and its disk."""
    state = _begin(ctx, json_)
    if not yes and not typer.confirm(f"Delete {vm_id} and its disk?", default=False):
        raise typer.Exit(1)
    with state.output.spinner(f"Deleting {vm_id}…"):
        state.client().vms.delete(vm_id, force=force)
    state.output.message(f"Deleted {vm_id}")
    if json_:
        state.output.json({"id": vm_id, "deleted": True})


@app.command("console")
def console(ctx: typer.Context, vm_id: VmIdArg) -> None:
    """Attach to the VM's serial console (Ctrl-] detaches)."""
    state = state_of(ctx)
    try:
        stdin_fd = sys.stdin.fileno()
        stdout = sys.stdout.buffer
    except (AttributeError, OSError, ValueError) as exc:
        raise ValidationError(
            "the console needs a terminal or a pipe on stdin", code="NO_TERMINAL"
        ) from exc
    asyncio.run(run_console(state.async_client(), vm_id, stdin_fd, stdout))


@app.command("reset")
def reset(ctx: typer.Context, vm_id: VmIdArg, wait: WaitOpt = True, json_: JsonOpt = False) -> None:
    """Hard-reset a running VM (like pressing the reset button)."""
    state = _begin(ctx, json_)
    call = partial(state.client().vms.reset, vm_id, wait=wait)
    _run_action(state, vm_id, "reset", call, wait)
