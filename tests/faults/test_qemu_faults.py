"""One VM's QEMU killed (-9) or frozen (SIGSTOP) under a running server (issue #7, cases 3 and 4).

These run the app in-process (real QEMU, real SQLite) so that they can watch the event bus that
the WebSocket API fans out to subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TCG_SCALE, Api, auth, kill_all_vms, make_settings, running_api
from tests.faults.conftest import metric, poll, qemu_pids
from tests.integration.conftest import TINY_VM, wait_gone
from voidvm_server.events.bus import Event

pytestmark = pytest.mark.qemu
DETECT_LIMIT = 3 * TCG_SCALE  # "about a second"; a loaded CI machine gets some slack
QMP_TIMEOUT = 1.5  # small, yet well above what a healthy QEMU needs on a loaded machine


@asynccontextmanager
async def qemu_app(tmp_path: Path, tiny: tuple[Path, Path], **overrides: Any) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path, stop_timeout_seconds=30 * TCG_SCALE, **overrides)
    async with running_api(settings, None, tiny) as api:
        try:
            yield api
        finally:
            await kill_all_vms(api.container)


class Client:
    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        self.headers = auth(token)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        response = await self.api.client.request(method, f"/api/v1{path}", headers=self.headers, **kwargs)
        body: dict[str, Any] = response.json()
        return response.status_code, body

    async def ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body = await self.call(method, path, **kwargs)
        assert status in (200, 201), (method, path, status, body)
        data: dict[str, Any] = body["data"]
        return data

    async def running_vms(self, count: int, prefix: str) -> list[str]:
        ids = []
        for n in range(count):
            vm = await self.ok("POST", "/vms", json={"name": f"{prefix}-{n}", **TINY_VM})
            await self.ok("POST", f"/vms/{vm['id']}/start")
            ids.append(vm["id"])
        return ids

    async def pid(self, vm_id: str) -> int:
        pid: int = (await self.ok("GET", f"/vms/{vm_id}/status"))["pid"]
        return pid


async def next_status(queue: asyncio.Queue[Event], vm_id: str, timeout: float) -> tuple[Event, float]:
    """The next vm-status event of `vm_id`, and when it was taken off the queue."""
    async with asyncio.timeout(timeout):
        while True:
            event = await queue.get()
            if event.kind == "vm-status" and event.vm_id == vm_id:
                return event, time.monotonic()


def pending(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


def drain(queue: asyncio.Queue[Event]) -> None:
    pending(queue)


async def assert_untouched(client: Client, pids: dict[str, int]) -> None:
    for vm_id, pid in pids.items():
        live = await client.ok("GET", f"/vms/{vm_id}/status")
        assert (live["status"], live["pid"], live["qemu_status"]) == ("running", pid, "running")
        assert qemu_pids(vm_id) == [pid]


# -- case 3: kill -9 of one QEMU --------------------------------------------------------------------
async def test_a_killed_qemu_becomes_error_within_a_second_and_subscribers_hear_it(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with qemu_app(tmp_path, tiny_image) as api:
        client = Client(api, await api.login())
        victim, *others = await client.running_vms(3, "crash")
        bystanders = {vm_id: await client.pid(vm_id) for vm_id in others}
        queue, unsubscribe = api.container.bus.queue()
        latencies = []
        try:
            for _ in range(5):
                pid = await client.pid(victim)
                drain(queue)
                began = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                event, seen = await next_status(queue, victim, timeout=10 * TCG_SCALE)
                latencies.append(seen - began)
                assert event.data["status"] == "error", event
                assert event.data["previous"] == "running"
                assert "exited unexpectedly" in event.data["reason"]
                vm = await client.ok("GET", f"/vms/{victim}")
                assert (vm["status"], vm["ports"], vm["started_at"]) == ("error", {}, None)
                assert "exited unexpectedly" in vm["status_reason"]
                await assert_untouched(client, bystanders)
                # The default policy is `off`: nothing starts it again by itself.
                assert qemu_pids(victim) == []
                await client.ok("POST", f"/vms/{victim}/start")
        finally:
            unsubscribe()
        metric("crash_detection_latency_ms_median", round(statistics.median(latencies) * 1000))
        metric("crash_detection_latency_ms_max", round(max(latencies) * 1000))
        assert max(latencies) < DETECT_LIMIT, latencies


async def test_restart_policy_on_crash_restarts_with_backoff_up_to_the_cap(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with qemu_app(tmp_path, tiny_image) as api:
        client = Client(api, await api.login())
        victim, other = await client.running_vms(2, "phoenix")
        bystanders = {other: await client.pid(other)}
        policy: dict[str, Any] = {"mode": "on-crash", "max_restarts": 2, "backoff_seconds": 0.3,
                                  "window_seconds": 120}  # fmt: skip
        config = await client.ok("PUT", "/config", json={"restart_policy": policy})
        assert config["restart_policy"] == policy
        assert (await client.ok("GET", "/config"))["restart_policy"] == policy

        queue, unsubscribe = api.container.bus.queue()
        try:
            for attempt in range(2):
                pid = await client.pid(victim)
                drain(queue)
                os.kill(pid, signal.SIGKILL)
                error, crashed = await next_status(queue, victim, 10 * TCG_SCALE)
                starting, restarting = await next_status(queue, victim, 10 * TCG_SCALE)
                running, _ = await next_status(queue, victim, 30 * TCG_SCALE)
                assert [e.data["status"] for e in (error, starting, running)] == [
                    "error",
                    "starting",
                    "running",
                ]
                assert "exited unexpectedly" in starting.data["reason"]  # says why it restarts
                assert running.data["reason"] is None
                backoff = policy["backoff_seconds"] * 2**attempt
                metric(f"restart_{attempt + 1}_backoff_seconds", round(restarting - crashed, 2))
                assert restarting - crashed >= backoff * 0.9
                new_pid = await client.pid(victim)
                assert new_pid != pid and qemu_pids(victim) == [new_pid]
                await assert_untouched(client, bystanders)

            # The cap: a third crash within the window stays an error, and says so.
            drain(queue)
            os.kill(await client.pid(victim), signal.SIGKILL)
            error, _ = await next_status(queue, victim, 10 * TCG_SCALE)
            assert error.data["status"] == "error"
            assert "not restarted: 2 automatic restarts within 120s" in error.data["reason"]
            await asyncio.sleep(policy["backoff_seconds"] * 4 + 1)
            assert [e.data for e in pending(queue) if e.kind == "vm-status" and e.vm_id == victim] == []
            assert (await client.ok("GET", f"/vms/{victim}"))["status"] == "error"
            assert qemu_pids(victim) == []

            # A stop asked for is not a crash: nothing restarts it.
            await client.ok("POST", f"/vms/{other}/stop", json={"force": True})
            await asyncio.sleep(policy["backoff_seconds"] * 2 + 1)
            assert (await client.ok("GET", f"/vms/{other}"))["status"] == "stopped"
            assert qemu_pids(other) == []
        finally:
            unsubscribe()
        # Switched off live: the next crash is left alone.
        await client.ok("PUT", "/config", json={"restart_policy": {"mode": "off"}})
        await client.ok("POST", f"/vms/{other}/start")
        os.kill(await client.pid(other), signal.SIGKILL)
        await poll(lambda: _status_is(client, other, "error"), timeout=10 * TCG_SCALE, what="error")
        await asyncio.sleep(policy["backoff_seconds"] + 1)
        assert (await client.ok("GET", f"/vms/{other}"))["status"] == "error"


async def _status_is(client: Client, vm_id: str, status: str) -> bool:
    return bool((await client.ok("GET", f"/vms/{vm_id}"))["status"] == status)


# -- case 4: SIGSTOP of one QEMU ------------------------------------------------------------------------
async def test_a_frozen_qemu_times_out_alone_and_recovers(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with qemu_app(tmp_path, tiny_image, qmp_timeout_seconds=QMP_TIMEOUT) as api:
        client = Client(api, await api.login())
        victim, *others = await client.running_vms(3, "frozen")
        pid = await client.pid(victim)
        bystanders = {vm_id: await client.pid(vm_id) for vm_id in others}
        other_latencies: list[float] = []
        done = asyncio.Event()

        async def keep_calling_the_others() -> None:
            while not done.is_set():
                for vm_id in others:
                    for path in (f"/vms/{vm_id}/status", f"/vms/{vm_id}/metrics"):
                        began = time.monotonic()
                        await client.ok("GET", path)
                        other_latencies.append(time.monotonic() - began)
                await asyncio.sleep(0.05)

        os.kill(pid, signal.SIGSTOP)
        try:
            others_task = asyncio.ensure_future(keep_calling_the_others())
            timings = {}
            for name, method, path, body in [
                ("status", "GET", f"/vms/{victim}/status", None),
                ("metrics", "GET", f"/vms/{victim}/metrics", None),
                ("pause", "POST", f"/vms/{victim}/pause", None),
                ("stop", "POST", f"/vms/{victim}/stop", {"force": False, "timeout": 20}),
            ]:
                began = time.monotonic()
                status, body_json = await client.call(method, path, json=body)
                timings[name] = time.monotonic() - began
                assert status == 504, (name, status, body_json)
                assert body_json["error"]["code"] == "HYPERVISOR_TIMEOUT", body_json
                assert "did not answer" in body_json["error"]["message"]
                assert timings[name] < QMP_TIMEOUT + 1.5, (name, timings[name])
            done.set()
            await others_task
            metric("frozen_vm_call_seconds", {k: round(v, 2) for k, v in timings.items()})
            metric("other_vm_call_ms_max", round(max(other_latencies) * 1000))
            metric("other_vm_calls", len(other_latencies))
            # Never queued behind the frozen VM: each answer well within one QMP timeout.
            assert other_latencies and max(other_latencies) < QMP_TIMEOUT / 2, max(other_latencies)
            # The failed stop put the VM back: it is still running, not stuck in `stopping`.
            vm = await client.ok("GET", f"/vms/{victim}")
            assert vm["status"] == "running", vm
            await assert_untouched(client, bystanders)
        finally:
            done.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        # Awake again: it answers, and none of the refused commands ran behind our back.
        began = time.monotonic()
        live = await client.ok("GET", f"/vms/{victim}/status")
        metric("frozen_vm_recovery_seconds", round(time.monotonic() - began, 2))
        assert (live["status"], live["qemu_status"], live["pid"]) == ("running", "running", pid)
        await client.ok("POST", f"/vms/{victim}/pause")
        assert (await client.ok("GET", f"/vms/{victim}/status"))["qemu_status"] == "paused"
        await client.ok("POST", f"/vms/{victim}/resume")

        # Frozen again: a forced stop still works (SIGKILL reaches a stopped process).
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            stopped = await client.ok("POST", f"/vms/{victim}/stop", json={"force": True})
            metric("forced_stop_of_frozen_vm_seconds", round(time.monotonic() - began, 2))
            assert stopped["status"] == "stopped"
            await wait_gone(pid)
            assert qemu_pids(victim) == []
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await assert_untouched(client, bystanders)
