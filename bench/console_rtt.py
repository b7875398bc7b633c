"""Serial console round trip: one keystroke to its echo, through VoidVM and straight to QEMU.

A real server runs the tiny guest. One sample = one message with a backspace (erasing the
previous key) and the next key, until the key's echo is back. Three paths, in alternating blocks:
- direct: a unix-socket connection to the serial chardev of a bare QEMU with VoidVM's flags and the
  same guest (the physical limit; VoidVM's own guests are not reachable that way, since QEMU serves
  one client and the server's console recorder is it);
- /ws: `terminal-input` → ConsoleHub → QEMU → ConsoleHub → `terminal-output` (JSON text);
- raw: the binary `/api/v1/vms/{id}/console` stream, opened with a ticket (xterm.js's path).
The ratio to direct is what VoidVM's console costs.
Run: .venv/bin/python -m bench.console_rtt [--samples 200] [--blocks 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from bench.common import (
    READY_LINE,
    Server,
    bench_accel,
    kill_qemu_under,
    log,
    percentile,
    tiny_media,
    voidvm_server,
    wait_for_file_bytes,
)
from bench.report import Section, Table
from voidvm_server.drivers.base import BootMedia, VMSpec
from voidvm_server.drivers.qemu.cmdline import RunPaths, build_argv

KEYS = "abcdefghijklmnopqrstuvwxyz"
Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[str]]


async def round_trips(send: Send, receive: Receive, samples: int) -> list[float]:
    """Time `samples` keystroke echoes on an open console."""

    async def until(needle: str) -> None:
        seen = ""
        async with asyncio.timeout(30):
            while needle not in seen:
                seen += await receive()

    await send("\n")
    await until("#")  # a fresh prompt
    times = []
    for n in range(samples):
        key = KEYS[n % len(KEYS)]
        started = time.perf_counter()
        await send(("\x7f" if n else "") + key)  # erase the previous key, type the next
        await until(key)
        times.append(time.perf_counter() - started)
    await send("\x7f")
    await until("\x08")
    return times


@contextlib.contextmanager
def bare_qemu(server: Server) -> Iterator[Path]:
    """The tiny guest in a bare QEMU with VoidVM's flags (standalone: it logs its serial output
    itself); yields its serial socket once the guest is ready."""
    media = tiny_media(server)
    assert isinstance(media, BootMedia)
    with tempfile.TemporaryDirectory(prefix="voidvm-bench-rtt-") as tmp:
        paths = RunPaths(Path(tmp))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(paths.disk), "1G"], check=True)
        spec = VMSpec("vm-bench-rtt", 1, 256, media, None)
        argv = build_argv(spec, paths, binary="qemu-system-x86_64", accel=bench_accel(), net_fd=None,
                          standalone=True)  # fmt: skip
        try:
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            wait_for_file_bytes(paths.console_log, time.perf_counter() + 120, READY_LINE)
            yield paths.serial
        finally:
            kill_qemu_under(Path(tmp))


async def direct(path: Path, samples: int) -> list[float]:
    reader, writer = await asyncio.open_unix_connection(str(path))

    async def send(text: str) -> None:
        writer.write(text.encode())
        await writer.drain()

    async def receive() -> str:
        return (await reader.read(4096)).decode(errors="replace")

    try:
        return await round_trips(send, receive, samples)
    finally:
        writer.close()
        await writer.wait_closed()


async def over_ws(server: Server, vm_id: str, samples: int) -> list[float]:
    url = f"ws://127.0.0.1:{server.port}/ws?token={server.token}"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "terminal-connect", "data": {"vmId": vm_id}}))

        async def send(text: str) -> None:
            await ws.send(json.dumps({"type": "terminal-input", "data": {"vmId": vm_id, "input": text}}))

        async def receive() -> str:
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "terminal-output":
                    return str(message["data"]["output"])
                if message["type"] == "error":
                    raise RuntimeError(message["data"])

        return await round_trips(send, receive, samples)


async def raw(server: Server, vm_id: str, samples: int) -> list[float]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.token}"}) as http:
        response = await http.post(f"{server.url}/vms/{vm_id}/console", json={"type": "serial"})
    async with connect(response.json()["data"]["url"]) as ws:

        async def send(text: str) -> None:
            await ws.send(text.encode())

        async def receive() -> str:
            frame = await ws.recv()
            return frame.decode(errors="replace") if isinstance(frame, bytes) else frame

        return await round_trips(send, receive, samples)


PATHS: dict[str, Callable[[Server, str, int], Awaitable[list[float]]]] = {"/ws": over_ws, "raw": raw}


async def wait_ready(server: Server, vm_id: str) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.token}"}) as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = await http.get(f"{server.url}/vms/{vm_id}/console/log")
            if READY_LINE.decode() in response.json()["data"]["log"]:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError("the tiny guest did not become ready")


async def measure(
    server: Server, vm_id: str, bare_serial: Path, samples: int, blocks: int
) -> dict[str, list[float]]:
    await wait_ready(server, vm_id)
    paths = {"direct": lambda s, v, n: direct(bare_serial, n), **PATHS}
    results: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for block in range(blocks):
        for name in names[block % 3 :] + names[: block % 3]:
            times = await paths[name](server, vm_id, samples // blocks)
            results[name] += times
        log(f"block {block + 1}/{blocks}: " + ", ".join(
            f"{k} p50 {percentile(v, 0.5) * 1000:.2f} ms" for k, v in results.items()))  # fmt: skip
    return results


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def run(samples: int, blocks: int) -> Section:
    section = Section(
        "console_rtt",
        "Serial console round trip: VoidVM's WebSocket vs a direct QEMU socket",
        f".venv/bin/python -m bench.console_rtt --samples {samples} --blocks {blocks}",
    )
    with (
        voidvm_server() as server,
        httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
        ) as client,
    ):
        vm = client.post("/vms", json={"name": "rtt", "cpu": 1, "memory": 256, "disk": 1}).json()["data"]
        started = client.post(f"/vms/{vm['id']}/start")
        assert started.status_code == 200, started.text
        with bare_qemu(server) as bare_serial:
            results = asyncio.run(measure(server, vm["id"], bare_serial, samples, blocks))
        accel = client.get("/system/info").json()["data"]["hypervisor"]["accelerator"]
    base = percentile(results["direct"], 0.5)
    rows = []
    for name, label in [("direct", "direct unix socket (bare QEMU)"), ("/ws", "/ws terminal (JSON)"),
                        ("raw", "raw /console stream")]:  # fmt: skip
        values = results[name]
        p50 = percentile(values, 0.5)
        rows.append([label, ms(p50), ms(percentile(values, 0.99)), f"{p50 / base:.2f}", str(len(values))])
    section.tables.append(Table(
        ["path", "p50", "p99", "p50 / direct", "samples"], rows,
        f"One keystroke to its echo, tiny guest under {accel}, {blocks} alternating blocks",
    ))  # fmt: skip
    ws_extra = percentile(results["/ws"], 0.5) - base
    section.reading.append(
        f"The WebSocket adds {ws_extra * 1000:.2f} ms per round trip at the median "
        f"({percentile(results['/ws'], 0.5) / base:.2f}x direct): two hops through the ConsoleHub, "
        "JSON both ways and the loopback TCP connection; the guest's own echo dominates the rest."
    )
    section.data = {"accelerator": accel, "samples": results}
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=300, help="per path, split across the blocks")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--no-save", action="store_true", help="print only; keep bench/results as is")
    args = parser.parse_args()
    section = run(args.samples, args.blocks)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
