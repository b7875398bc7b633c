"""`voidvm-server serve` with two kinds of measurement, each switched on per request by a header.

Only for the profile benchmark (bench/profile.py), which starts it in place of the real command.
It builds the same app with the same settings and uvicorn options, plus a thin ASGI wrapper:
- `X-Bench-Timers: <label>`: phase timers. A few of VoidVM's coroutines (listed in TIMED) are
  wrapped to add their wall-clock time to the current request's record; cheap enough (a few us
  per call) that the totals stay close to an unmeasured request.
- `X-Bench-Profile: <label>`: the request runs under pyinstrument (async mode: time spent
  awaiting is charged to the awaiting code); much slower, but shows the whole call tree.
`POST /__bench/profile` writes the pyinstrument sessions and the timer records of every label to
$VOIDVM_BENCH_PROFILE_DIR and forgets them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from voidvm_server.config import load_settings
from voidvm_server.logging_setup import configure_logging
from voidvm_server.tiny import install_tiny_image

Scope = dict[str, Any]
Record = dict[str, float]
# (module, attribute path) of the coroutines timed; a name imported into another module must be
# patched where it is looked up (spawn_daemonized is called through the driver module).
TIMED = [
    ("voidvm_server.services.auth", "AuthService.authenticate"),
    ("voidvm_server.api.deps", "enforce_rate_limit"),
    ("voidvm_server.services.vms", "VMService.get"),
    ("voidvm_server.services.vms", "VMService._reload"),
    ("voidvm_server.services.vms", "VMService._set_status"),
    ("voidvm_server.services.vms", "VMService._start"),
    ("voidvm_server.services.vms", "VMService.list"),
    ("voidvm_server.services.vms", "VMService.create"),
    ("voidvm_server.services.images", "ImageService.get"),
    ("voidvm_server.services.images", "ImageService.resolve"),
    ("voidvm_server.services.audit", "AuditLog.record"),
    ("voidvm_server.drivers.qemu.driver", "QemuDriver.start"),
    ("voidvm_server.drivers.qemu.driver", "QemuDriver.prepare_disk"),
    ("voidvm_server.drivers.qemu.driver", "spawn_daemonized"),
    ("voidvm_server.drivers.qemu.driver", "QemuDriver._track"),
    ("voidvm_server.drivers.qemu.qmp", "QMPConnection.connect"),
    ("voidvm_server.persistence.repositories", "VMRepository.list"),
    ("voidvm_server.persistence.repositories", "VMRepository.get"),
    ("voidvm_server.persistence.repositories", "VMRepository.update"),
    ("voidvm_server.services.event_log", "EventLog.add"),
    ("voidvm_server.persistence.repositories", "UserRepository.reserve"),
    ("asyncio", "create_subprocess_exec"),
    ("asyncio.subprocess", "Process.wait"),
]
current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "bench_timers", default=None
)


def _add(record: Record, name: str, started: float) -> None:
    record[name] = record.get(name, 0.0) + time.perf_counter() - started
    record[f"{name} (calls)"] = record.get(f"{name} (calls)", 0) + 1


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if not asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        def plain(*args: Any, **kwargs: Any) -> Any:
            record = current.get()
            if record is None:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                _add(record, name, started)

        return plain

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        record = current.get()
        if record is None:
            return await fn(*args, **kwargs)
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            _add(record, name, started)

    return wrapper


def install_timers() -> None:
    for module_name, path in TIMED:
        owner: Any = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attribute, _timed(path, getattr(owner, attribute)))


class MeasureRequests:
    def __init__(self, app: Any, out_dir: Path, interval: float) -> None:
        self.app = app
        self.out_dir = out_dir
        self.interval = interval
        self.sessions: dict[str, list[Any]] = {}
        self.timers: dict[str, list[dict[str, float]]] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/__bench/profile":
            body = json.dumps(await asyncio.to_thread(self.save)).encode()
            headers = [(b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = dict(scope["headers"])
        if label := headers.get(b"x-bench-timers"):
            record: dict[str, float] = {}
            token = current.set(record)
            started = time.perf_counter()
            try:
                await self.app(scope, receive, send)
            finally:
                record["request (server side)"] = time.perf_counter() - started
                current.reset(token)
                self.timers.setdefault(label.decode(), []).append(record)
        elif label := headers.get(b"x-bench-profile"):
            from pyinstrument import Profiler

            profiler = Profiler(interval=self.interval, async_mode="enabled")
            profiler.start()
            try:
                await self.app(scope, receive, send)
            finally:
                self.sessions.setdefault(label.decode(), []).append(profiler.stop())
        else:
            await self.app(scope, receive, send)

    def save(self) -> dict[str, int]:
        from pyinstrument.session import Session

        counts = {}
        for label, sessions in self.sessions.items():
            combined = sessions[0]
            for other in sessions[1:]:
                combined = Session.combine(combined, other)
            combined.save(str(self.out_dir / f"{label}.pyisession"))
            counts[f"profile:{label}"] = len(sessions)
        for label, records in self.timers.items():
            (self.out_dir / f"{label}.timers.json").write_text(json.dumps(records))
            counts[f"timers:{label}"] = len(records)
        self.sessions.clear()
        self.timers.clear()
        return counts


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    asyncio.run(install_tiny_image(settings))
    install_timers()
    from voidvm_server.api.app import create_app  # after the timers are in place

    out_dir = Path(os.environ["VOIDVM_BENCH_PROFILE_DIR"])
    interval = float(os.environ.get("VOIDVM_BENCH_PROFILE_INTERVAL", "0.0005"))
    app = MeasureRequests(create_app(settings), out_dir, interval)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
