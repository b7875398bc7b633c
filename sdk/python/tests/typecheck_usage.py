"""SDK usage that must pass ``mypy --strict`` (checked in CI; never executed by pytest)."""

from __future__ import annotations

import re

import httpx

from voidvm import (
    VM,
    AsyncVoidVMClient,
    ConflictError,
    CreatedApiToken,
    Event,
    Image,
    NotFoundError,
    Operation,
    Page,
    QuotaExceededError,
    RateLimitError,
    Record,
    Topics,
    TopicSpec,
    User,
    VoidVMClient,
    VoidVMError,
    WaitTimeoutError,
)
from voidvm.cli import CliDeps, ExitCode, make_app


def seed_snippet(token: str) -> str:
    client = VoidVMClient(base_url="http://localhost:3000/api/v1", token=token)
    vms: list[VM] = client.vms.list()
    new_vm = client.vms.create({"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20})
    started: VM = client.vms.start(new_vm["id"])
    vm_id: str = new_vm.id
    status: str = started.status
    return f"{len(vms)} {vm_id} {status}"


def sync_surface(client: VoidVMClient) -> None:
    page: Page[VM] = client.vms.list_page(1, 20, status="running", search="web", sort="-created_at")
    more: bool = page.has_next
    for vm in client.vms.iter(status="stopped"):
        ssh: int | None = vm.ports.ssh if vm.ports else None
        print(vm.name, vm.memory, ssh, more)
    vm = client.vms.create(name="kw", cpu=1, memory=512, disk=5, os="tiny", auto_start=True)
    client.vms.update(vm.id, name="renamed", cpu=2)
    client.vms.stop(vm.id, force=False, timeout=10.5)
    ready: VM = client.vms.wait_for(vm.id, ["stopped", "error"], timeout=60, interval=0.5)
    print(ready.status_reason, client.vms.status(vm.id).qemu_status)
    print(client.vms.metrics(vm.id).cpu_percent, client.vms.console_log(vm.id, tail=1024).log)
    client.vms.delete(vm.id, force=True)

    images: list[Image] = client.images.list()
    client.images.create(name="deb", format="qcow2", url="https://example.org/deb.qcow2")
    client.images.upload(b"\x00", name="raw", format="raw")
    users: list[User] = client.users.list()
    client.users.create(username="bob", password="long-password", quota={"max_vms": 2})
    info: Record = client.system.info()
    config: Record = client.system.update_config({"limits": {"requests_per_minute": 50}})
    logs: Page[Record] = client.system.logs(page=1, limit=10, level="warning")
    me: User = client.auth.me()
    token: CreatedApiToken = client.auth.tokens.create("ci", expires_in_days=30)
    secret: str = token.token
    print(images, users, info.version, config, logs.items, me.role, secret)


def operations_surface(client: VoidVMClient) -> str:
    vm = client.vms.start("vm-001", wait=False)
    done: Operation = client.operations.wait(vm.operation, timeout=120)
    done.raise_for_failure()
    image = client.images.create(
        name="deb", format="qcow2", url="https://example.org/deb.qcow2", wait=False
    )
    percent: list[int | None] = []
    client.operations.wait(image.operation, on_progress=lambda op: percent.append(op.progress))
    page: Page[Operation] = client.operations.list_page(1, 20, status="running")
    history: list[Operation] = client.operations.list(type="vm.start", resource_id=vm.id)
    current: Operation = client.operations.get(page.items[0])
    if current.cancellable and not current.finished:
        cancelled: Operation = client.operations.cancel(current.id)
        print(cancelled.status)
    finished: bool = done.succeeded
    return f"{len(history)} {finished} {done.error} {done.result} {percent}"


def error_handling(client: VoidVMClient) -> int:
    try:
        client.vms.start("vm-001")
    except QuotaExceededError as exc:
        return 6 if exc.status == 403 else 1
    except NotFoundError as exc:
        print(exc.code, exc.message, exc.details, exc.request_id)
        return 4
    except RateLimitError as exc:
        wait: float | None = exc.retry_after
        print(wait)
        return 7
    except ConflictError:
        return 5
    except WaitTimeoutError:
        return 10
    except VoidVMError as exc:
        code: str = exc.code
        print(code)
        return 1
    return 0


def logged_in(transport: httpx.BaseTransport) -> VoidVMClient:
    client = VoidVMClient.login(
        "http://localhost:3000/api/v1",
        "admin",
        "admin123",
        transport=transport,
        retry_on_rate_limit=False,
    )
    with client:
        client.auth.change_password("admin123", "a-much-better-password")
    return client


async def async_surface(token: str) -> None:
    async with AsyncVoidVMClient(base_url="http://localhost:3000/api/v1", token=token) as client:
        vms: list[VM] = await client.vms.list()
        async for vm in client.vms.iter():
            print(vm.id)
        new_vm = await client.vms.create({"name": "a", "cpu": 1, "memory": 512, "disk": 5})
        await client.vms.start(new_vm.id)
        await client.vms.wait_for(new_vm.id, status="running", timeout=120)

        async with client.console(new_vm.id) as con:
            match: re.Match[str] = await con.wait_for_output("login:", timeout=60)
            await con.write("root\n")
            await con.wait_for_output(re.compile(r"[#$] $"), timeout=30, partial_line=True)
            chunk: str = await con.read(timeout=1)
            print(match.group(0), chunk, con.buffer)

        topics: list[TopicSpec] = ["vm-status-all", Topics.vm_metrics(new_vm.id, interval=5)]
        async for event in client.events(topics, max_reconnects=5):
            typed: Event = event
            event_id: int | None = typed.event_id
            print(typed.type, typed.data.get("status"), event_id, typed.vm_id)
            break
        async with client.events([Topics.vm_status(new_vm.id), "system-monitor"]) as stream:
            first: Event = await anext(stream)
            print(first.data, stream.last_event_id)
        accepted = await client.vms.stop(new_vm.id, wait=False)
        stopped: Operation = await client.operations.wait(accepted.operation, timeout=60)
        async for event in client.events([Topics.operations()]):
            changed: Operation | None = event.operation
            if changed is not None and changed.id == stopped.id:
                break
        print(len(vms))


def cli_embedding(transport: httpx.BaseTransport) -> int:
    deps = CliDeps(client_factory=lambda url, token: VoidVMClient(url, token, transport=transport))
    app = make_app(deps)
    print(app)
    return int(ExitCode.NOT_FOUND)
