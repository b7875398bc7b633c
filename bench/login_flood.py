"""GET latency under a login flood: an unrelated `GET /vms` while 40 clients log in without pause,
against the same GET on an idle server (same server, same run).

Every login costs ~0.1 s of argon2 CPU. The server hashes in a pool of its own at low priority
and refuses logins beyond `login_max_concurrent` at once (429 LOGIN_BUSY), so a flood should
cost other requests little. The login budgets (which count logins in flight, and so would turn
most of a one-address flood away before any hashing) are lifted for the run, so that every login
of the flood reaches the password pool. The flood runs in a separate process (its client work must not share
this process's event loop), talks only to 127.0.0.1 and stops by itself.
Run: .venv/bin/python -m bench.login_flood [--requests 200] [--flooders 40]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from collections import Counter

import httpx

from bench.common import ADMIN, log, percentile, voidvm_server
from bench.report import Section, Table


def _flood(url: str, flooders: int, seconds: float, results: multiprocessing.Queue[dict[str, int]]) -> None:
    async def one(client: httpx.AsyncClient, deadline: float, outcomes: Counter[str]) -> None:
        while time.monotonic() < deadline:
            response = await client.post(f"{url}/auth/login", json=ADMIN)
            code = "OK" if response.status_code == 200 else response.json()["error"]["code"]
            outcomes[code] += 1

    async def main() -> dict[str, int]:
        outcomes: Counter[str] = Counter()
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=flooders)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            await asyncio.gather(*(one(client, deadline, outcomes) for _ in range(flooders)))
        return dict(outcomes)

    results.put(asyncio.run(main()))


def _timed_gets(client: httpx.Client, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get("/vms")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return timings


def run(requests: int = 200, flooders: int = 40) -> Section:
    section = Section(
        "login_flood",
        "GET latency under a login flood",
        f".venv/bin/python -m bench.login_flood --requests {requests} --flooders {flooders}",
    )
    # The login budgets count logins in flight, so they would turn most of a one-address flood
    # away before any hashing; lifted here so that every login reaches the password pool.
    unlimited = {
        f"VOIDVM_LOGIN_{name}": "1000000"
        for name in ("ATTEMPTS_PER_MINUTE", "MAX_FAILURES", "MAX_FAILURES_PER_ACCOUNT")
    }
    with voidvm_server(**unlimited) as server, server.client() as client:
        for n in range(20):
            assert client.post(
                "/vms", json={"name": f"flood-{n}", "cpu": 1, "memory": 128, "disk": 1}
            ).is_success
        _timed_gets(client, 20)  # warm-up
        idle = _timed_gets(client, requests)
        results: multiprocessing.Queue[dict[str, int]] = multiprocessing.Queue()
        flood_seconds = 30.0
        flood = multiprocessing.Process(target=_flood, args=(server.url, flooders, flood_seconds, results))
        flood.start()
        try:
            time.sleep(2.0)  # the flood is at full strength
            started = time.monotonic()
            loaded = _timed_gets(client, requests)
            measured_for = time.monotonic() - started
            outcomes = results.get(timeout=flood_seconds + 60)
        finally:
            flood.join(10)
            if flood.is_alive():
                flood.kill()
    if measured_for > flood_seconds - 2:
        log("the measurement outlasted the flood: the loaded figures are optimistic")
    rows = []
    for label, values in (("idle", idle), (f"{flooders} clients logging in", loaded)):
        rows.append([
            label,
            f"{percentile(values, 0.5) * 1000:.1f}",
            f"{percentile(values, 0.9) * 1000:.1f}",
            f"{percentile(values, 0.99) * 1000:.1f}",
            str(len(values)),
        ])  # fmt: skip
    ratio50 = percentile(loaded, 0.5) / percentile(idle, 0.5)
    ratio99 = percentile(loaded, 0.99) / percentile(idle, 0.99)
    rows.append(["ratio (flood / idle)", f"{ratio50:.2f}", "", f"{ratio99:.2f}", ""])
    section.tables.append(
        Table(["GET /vms (20 VMs)", "p50 ms", "p90 ms", "p99 ms", "n"], rows, "Same server, same run")
    )
    total = sum(outcomes.values())
    section.tables.append(
        Table(
            ["login answer", "count", "per second"],
            [[k, str(v), f"{v / flood_seconds:.1f}"] for k, v in sorted(outcomes.items())],
            f"The flood: {total} logins in {flood_seconds:g} s from {flooders} concurrent clients",
        )
    )
    section.reading.append(
        f"Under the flood an unrelated GET takes {ratio50:.2f}x its idle median and {ratio99:.2f}x its "
        f"idle p99. Logins that would have queued beyond the cap were refused at once "
        f"({outcomes.get('LOGIN_BUSY', 0)} LOGIN_BUSY), and {outcomes.get('OK', 0)} succeeded."
    )
    section.data = {"idle_s": idle, "loaded_s": loaded, "outcomes": outcomes, "flooders": flooders}
    return section.finish()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--flooders", type=int, default=40)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    section = run(args.requests, args.flooders)
    section.print()
    if not args.no_save:
        section.save()


if __name__ == "__main__":
    main()
