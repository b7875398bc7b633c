"""What each authenticated /ws request does. Same services, same rules as the REST routes.

Each handler gets the parsed data and the request id; replies go through `Session.reply`, domain
errors propagate (the connection answers them with `error`, echoing the id).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from voidvm_server.api.container import Container
from voidvm_server.api.presenters import stats_json
from voidvm_server.api.ws.protocol import (
    PingData,
    SubscribeData,
    TerminalConnectData,
    TerminalDisconnectData,
    TerminalInputData,
    TerminalResizeData,
    UnsubscribeData,
    VMControlData,
)
from voidvm_server.api.ws.samplers import Samplers, host_sample
from voidvm_server.api.ws.subscriptions import EventRouter
from voidvm_server.api.ws.terminal import Terminals
from voidvm_server.auth.principal import Principal
from voidvm_server.services.clock import now
from voidvm_server.services.vms import VMQuery

MessageId = str | int | None
Reply = Callable[[str, dict[str, Any], MessageId], None]
QUICK_ACTIONS = frozenset({"pause", "resume", "reset"})  # one QMP command: wait for the result


@dataclass
class Session:
    """One authenticated socket, as the handlers see it."""

    container: Container
    principal: Callable[[], Principal]
    router: EventRouter
    samplers: Samplers
    terminals: Terminals
    reply: Reply
    resume_from: int | None  # the socket's ?lastEventId=, the default for subscribes


async def subscribe(s: Session, data: SubscribeData, msg_id: MessageId) -> None:
    s.router.hold()
    try:
        await _subscribe(s, data, msg_id)
    finally:
        s.router.release()


async def _subscribe(s: Session, data: SubscribeData, msg_id: MessageId) -> None:
    principal = s.principal()
    vm_id = data.vmId
    if vm_id is not None and data.topic in ("vm-status", "vm-metrics"):
        vm_id = (await s.container.vms.get(principal, vm_id)).id
    ack: dict[str, Any] = {"topic": data.topic}
    if data.topic in ("vm-status", "vm-status-all", "system-event", "operations"):
        target = vm_id if data.topic == "vm-status" else None
        last = data.lastEventId if data.lastEventId is not None else s.resume_from
        s.router.subscribe(
            target, last, system=data.topic == "system-event", operations=data.topic == "operations"
        )
        if target is not None:
            ack["vmId"] = target
        ack["lastEventId"] = s.container.events.delivered_id
    else:
        ack["interval"] = data.period
        if data.topic == "vm-metrics":
            assert vm_id is not None
            ack["vmId"] = vm_id
            s.samplers.start(("vm-metrics", vm_id), data.period, _vm_sampler(s, vm_id))
        else:
            s.samplers.start(("system-monitor", None), data.period, _host_sampler(s))
    s.reply("subscribed", ack, msg_id)


async def unsubscribe(s: Session, data: UnsubscribeData, msg_id: MessageId) -> None:
    if data.topic == "vm-status-all":
        s.router.unsubscribe(None)
    elif data.topic == "system-event":
        s.router.unsubscribe(None, system=True)
    elif data.topic == "operations":
        s.router.unsubscribe(None, operations=True)
    elif data.topic == "vm-status" and data.vmId is not None:
        s.router.unsubscribe(data.vmId)
    elif data.topic == "vm-metrics" and data.vmId is not None:
        s.samplers.stop(("vm-metrics", data.vmId))
    elif data.topic == "system-monitor":
        s.samplers.stop(("system-monitor", None))
    ack: dict[str, Any] = {"topic": data.topic}
    if data.vmId is not None:
        ack["vmId"] = data.vmId
    s.reply("unsubscribed", ack, msg_id)


def _vm_sampler(s: Session, vm_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def sample() -> dict[str, Any]:
        vm, stats, allocated = await s.container.vms.stats(s.principal(), vm_id)
        return {"vmId": vm.id, **stats_json(vm, stats, allocated, now())}

    return sample


def _host_sampler(s: Session) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def sample() -> dict[str, Any]:
        principal = s.principal()
        host = await asyncio.to_thread(host_sample, str(s.container.settings.data_dir))
        _, total = await s.container.vms.list(principal, VMQuery(limit=1))
        _, running = await s.container.vms.list(principal, VMQuery(limit=1, status=["running"]))
        return {**host, "vms": {"total": total, "running": running}}

    return sample


async def vm_control(s: Session, data: VMControlData, msg_id: MessageId) -> None:
    principal = s.principal()
    wait = data.action in QUICK_ACTIONS
    vms, force, timeout = s.container.vms, data.force, data.timeout  # the service writes the audit entry
    reply: dict[str, Any] = {"vmId": data.vmId, "action": data.action}
    if wait:
        vm = await vms.action(principal, data.vmId, data.action, force=force, timeout=timeout)
    else:
        vm, operation = await vms.submit(principal, data.vmId, data.action, force=force, timeout=timeout)
        reply["operationId"] = operation.id
    reply.update(vmId=vm.id, status=vm.status.value, accepted=not wait)
    s.reply("vm-control-response", reply, msg_id)


async def terminal_connect(s: Session, data: TerminalConnectData, msg_id: MessageId) -> None:
    vm = await s.container.vms.get_running(s.principal(), data.vmId)
    await s.terminals.connect(vm.id, data.cols, data.rows, msg_id)


async def terminal_input(s: Session, data: TerminalInputData, msg_id: MessageId) -> None:
    await s.terminals.input(data.vmId, data.input)


async def terminal_resize(s: Session, data: TerminalResizeData, msg_id: MessageId) -> None:
    s.terminals.resize(data.vmId, data.cols, data.rows)


async def terminal_disconnect(s: Session, data: TerminalDisconnectData, msg_id: MessageId) -> None:
    await s.terminals.disconnect(data.vmId)
    s.reply("terminal-disconnected", {"vmId": data.vmId}, msg_id)


async def ping(s: Session, data: PingData, msg_id: MessageId) -> None:
    s.reply("pong", data.model_dump(), msg_id)


Handler = Callable[[Session, Any, MessageId], Awaitable[None]]
HANDLERS: dict[str, Handler] = {
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "vm-control": vm_control,
    "terminal-connect": terminal_connect,
    "terminal-input": terminal_input,
    "terminal-resize": terminal_resize,
    "terminal-disconnect": terminal_disconnect,
    "ping": ping,
}


async def dispatch(s: Session, type: str, data: BaseModel, msg_id: MessageId) -> None:
    await HANDLERS[type](s, data, msg_id)
