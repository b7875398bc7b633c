"""WebSocket fan-out: one VM state change, N subscribed sockets across serve's API workers.

A real server runs in a subprocess: `voidvm-server serve` with its default workers (one per core)
and the host agent, its workers forked with one addition, a record of when each event is written.
This process opens N sockets (ten per user, the default per-user limit, across as many admin users
as needed); the kernel spreads the connections over the workers, so with two of them about half
the subscribers sit on the worker that does not write the change and hear of it through the
events table (on SQLite, woken by the writer's ring of their doorbell, services/event_follow.py).
Each socket subscribes to the VM's `vm-status`, then pause/resume is toggled on a running tiny
guest: every toggle is exactly one state change. Latency = the moment a client has the message
minus the moment the writing worker began to write the event to the database (both sides read the
same wall clock). Every socket's latency is one sample; "all delivered" is the slowest socket of
a round. The clients share one Python process: what they see includes their own decoding of N
messages, as a dashboard's would.
Run: .venv/bin/python -m bench.ws_fanout [--sockets 1,100,500] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bench.common import PYTHON, Server, log, percentile, voidvm_server
from bench.report import Section, Table

PER_USER = 10


# -- the server side (runs in the subprocess) ------------------------------------------------------
def serve_child(publish_log: Path) -> None:
    """`voidvm-server serve` whose workers record when each event is written (EventLog.add)."""
    from voidvm_server import cli
    from voidvm_server.services.event_log import EventLog

    add = EventLog.add
    out = publish_log.open("a", buffering=1)  # one line per write: the workers' lines never mix

    async def timed_add(self: EventLog, *args: Any, **kwargs: Any) -> Any:
        at = time.time()  # before the row is written: the latency includes the commit
        event = await add(self, *args, **kwargs)
        out.write(f"{event.id} {at:.6f}\n")
        return event

    EventLog.add = timed_add  # type: ignore[method-assign]  # forked workers inherit it
    sys.argv = ["voidvm-server", "serve"]
    cli.main()


def published_at(publish_log: Path, event_id: int) -> float:
    for line in publish_log.read_text().splitlines():
        number, at = line.split()
        if int(number) == event_id:
            return float(at)
    raise KeyError(event_id)


# -- the client side ---------------------------------------------------------------------------------
class Subscriber:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: dict[int, float] = {}  # eventId -> wall-clock time of arrival
        self.arrived = asyncio.Event()

    async def read(self) -> None:
        async for raw in self.connection:
            at = time.time()
            message = json.loads(raw)
            if message["type"] == "vm-status":
                self.received[message["data"]["eventId"]] = at
                self.arrived.set()


async def tokens_for(server: Server, http: httpx.AsyncClient, sockets: int) -> list[str]:
    users = math.ceil(sockets / PER_USER)
    tokens = [server.token]
    for n in range(1, users):
        name = f"fanout{n}"
        body = {"username": name, "password": "fan-out-password", "role": "admin"}
        await http.post("/users", json=body)  # 409 when an earlier run created it: fine
        login = await http.post("/auth/login", json={"username": name, "password": body["password"]})
        tokens.append(login.json()["token"])
    return [tokens[i // PER_USER] for i in range(sockets)]


async def open_subscribers(server: Server, vm_id: str, tokens: list[str]) -> list[Subscriber]:
    async def one(token: str) -> Subscriber:
        connection = await connect(f"ws://127.0.0.1:{server.port}/ws?token={token}", open_timeout=60)
        await connection.send(
            json.dumps({"type": "subscribe", "data": {"topic": "vm-status", "vmId": vm_id}})
        )
        while json.loads(await connection.recv())["type"] != "subscribed":
            pass
        return Subscriber(connection)

    subscribers: list[Subscriber] = []
    for start in range(0, len(tokens), 50):  # a few at a time, as real dashboards arrive
        subscribers += await asyncio.gather(*(one(t) for t in tokens[start : start + 50]))
    return subscribers


async def measure(server: Server, vm_id: str, sockets: int, rounds: int, publish_log: Path) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as http:
        subscribers = await open_subscribers(server, vm_id, await tokens_for(server, http, sockets))
        readers = [asyncio.create_task(s.read()) for s in subscribers]
        samples: list[float] = []
        slowest: list[float] = []
        paused = (await http.get(f"/vms/{vm_id}")).json()["data"]["status"] == "paused"
        try:
            for round_no in range(rounds + 1):  # round 0 warms up
                for s in subscribers:
                    s.arrived.clear()
                action = "resume" if paused else "pause"
                paused = not paused
                response = await http.post(f"/vms/{vm_id}/{action}")
                assert response.status_code == 200, response.text
                async with asyncio.timeout(60):
                    await asyncio.gather(*(s.arrived.wait() for s in subscribers))
                event_id = max(subscribers[0].received)
                at = published_at(publish_log, event_id)
                latencies = [s.received[event_id] - at for s in subscribers]
                if round_no:
                    samples += latencies
                    slowest.append(max(latencies))
                await asyncio.sleep(0.2)  # let the server settle between rounds
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(s.connection.close() for s in subscribers), return_exceptions=True)
            await asyncio.gather(*readers, return_exceptions=True)
    return {"samples": samples, "slowest": slowest}


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def run(socket_counts: list[int], rounds: int) -> Section:
    section = Section(
        "ws_fanout",
        "WebSocket fan-out: one state change to N subscribed sockets, across API workers",
        f".venv/bin/python -m bench.ws_fanout --sockets {','.join(map(str, socket_counts))} "
        f"--rounds {rounds}",
    )
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="voidvm-bench-ws-") as tmp:
        publish_log = Path(tmp) / "published.log"
        argv = [PYTHON, "-m", "bench.ws_fanout", "--serve-child", str(publish_log)]
        with (
            voidvm_server(argv=argv) as server,
            httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=120
            ) as client,
        ):
            vm = client.post("/vms", json={"name": "fanout", "cpu": 1, "memory": 256, "disk": 1}).json()[
                "data"
            ]
            started = client.post(f"/vms/{vm['id']}/start")
            assert started.status_code == 200, started.text
            for count in socket_counts:
                log(f"{count} sockets, {rounds} state changes")
                results[count] = asyncio.run(measure(server, vm["id"], count, rounds, publish_log))
    rows = []
    for count, result in results.items():
        samples, slowest = result["samples"], result["slowest"]
        rows.append([str(count), ms(percentile(samples, 0.5)), ms(percentile(samples, 0.99)),
                     ms(max(samples)), ms(percentile(slowest, 0.5)), str(len(samples))])  # fmt: skip
    section.tables.append(Table(
        ["sockets", "p50", "p99", "max", "all delivered (median round)", "samples"], rows,
        f"Publish on the server's bus -> message decoded by the client, {rounds} state changes "
        f"(pause/resume of a running tiny guest), {PER_USER} sockets per user",
    ))  # fmt: skip
    largest = results[max(results)]["samples"]
    section.reading.append(
        f"With {max(results)} sockets the median socket has the change {ms(percentile(largest, 0.5))} after "
        f"the domain recorded it, the 99th percentile {ms(percentile(largest, 0.99))}; the spread is mostly "
        "the single client process decoding its messages one after another (and sharing the "
        "cores with the two workers sending them)."
    )
    section.data = {str(k): v for k, v in results.items()}
    return section.finish()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-child":
        serve_child(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", default="1,100,500", help="comma-separated socket counts")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-save", action="store_true", help="print only; keep bench/results as is")
    args = parser.parse_args()
    section = run([int(n) for n in args.sockets.split(",")], args.rounds)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
