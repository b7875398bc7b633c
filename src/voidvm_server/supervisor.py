"""`voidvm-server serve`: the host agent and the API workers, kept running.

- The host agent (`voidvm-server agent`) owns the QEMU processes. `serve` finds the one that
  answers on the agent socket, or starts one and stops it again on the way out (its VMs keep
  running either way: QEMU never depends on the agent). One it started and that dies is started
  again; the workers' connections find it by themselves.
- `workers` API processes (uvicorn apps, by default one per core) share one listening socket,
  which `serve` binds; the kernel spreads the connections. They start one after the other (the
  first creates the admin account, recovers what an earlier run left), then serve together.
  Workers are forked from `serve`, which imports their code while the agent starts: a worker is
  up in a few hundred milliseconds, where a fresh interpreter would import for a second and more.
  That is safe because `serve` runs no thread when it forks (checked: with a thread it spawns).
  Everything a request needs is in the database or the agent, so a worker that dies is simply
  started again and the others carry on.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from types import FrameType

from voidvm_server.agent.process import agent_socket
from voidvm_server.config import Settings

log = logging.getLogger(__name__)
AGENT_READY_SECONDS = 120.0  # the agent takes its running VMs back before it answers
AGENT_RETRY_SECONDS = 20.0  # an agent that exits at start is started again this long
WORKER_READY_SECONDS = 120.0
CHECK_SECONDS = 0.5
BIND_PATIENCE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2)
PR_SET_NAME = 15
RESTART_PAUSE_SECONDS = 1.0  # between two restarts of one process that keeps dying


class ServeError(RuntimeError):
    """`serve` could not start (the agent or a worker did not come up)."""


def exit_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send `signum` to this process when `parent` (the `serve` that started it)
    dies, kill -9 included: a worker or agent must never outlive its supervisor unseen (it would
    keep the port, or the VMs' consoles, from the next `serve`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signum)


def name_process(name: str) -> None:
    """The name `ps -o comm`, `top` and /proc/PID/comm show (15 bytes at most): a forked worker
    would otherwise carry `serve`'s."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def default_workers() -> int:
    """One per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def agent_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def listening_socket(host: str, port: int, *, patience: float = BIND_PATIENCE_SECONDS) -> socket.socket:
    """The socket the workers share. The workers of a `serve` just killed may hold the port for a
    moment yet (the kernel is ending them): a busy port is tried again for `patience` seconds."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + patience
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            break
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def preload_worker_code() -> None:
    """Import what a worker runs, so that forked workers find it imported."""
    import uvicorn  # noqa: F401

    import voidvm_server.api.app
    import voidvm_server.api.serving  # noqa: F401


def run_worker(
    settings: Settings, sock: socket.socket, ready: ProcessEvent, parent: int, index: int, replacement: bool
) -> None:
    """API worker `index` (a forked process): the app over the shared socket until SIGTERM, or
    until `serve` dies (then at once: as the whole server would have died). A `replacement`
    stands in for one that died."""
    exit_with_parent(signal.SIGKILL, parent)
    name_process(f"voidvm-api-{index}")
    for sig in (signal.SIGTERM, signal.SIGINT):  # not `serve`'s handlers: uvicorn sets its own
        signal.signal(sig, signal.SIG_DFL)
    import uvicorn

    from voidvm_server.api.app import create_app
    from voidvm_server.api.serving import serving_config
    from voidvm_server.logging_setup import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_json)
    app = create_app(settings, data_dir_lock=nullcontext(), on_ready=ready.set, replacement=replacement)
    uvicorn.Server(serving_config(app, settings)).run(sockets=[sock])


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    ready: ProcessEvent
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, *, workers: int, config_file: Path | None = None) -> None:
        self.workers = max(1, workers)
        self.config_file = config_file
        self.agent_path = agent_socket(settings)
        self.settings = settings.model_copy(update={"agent_socket": self.agent_path})
        self._agent: subprocess.Popen[bytes] | None = None
        self._workers: list[_Worker] = []
        self._socket: socket.socket | None = None
        self._stopping = False

    # -- the agent -------------------------------------------------------------------------------
    def _ensure_agent(self) -> None:
        """An agent answering on the socket: the one there, or one started now. A start that
        exits is tried again for AGENT_RETRY_SECONDS (the last `serve`'s agent may still hold the
        data directory's lock for a few seconds while it lets go of its VMs)."""
        deadline = time.monotonic() + AGENT_READY_SECONDS
        retry_until = time.monotonic() + AGENT_RETRY_SECONDS
        while not agent_answers(self.agent_path):
            command = [sys.executable, "-m", "voidvm_server.cli", "agent", "--exit-with", str(os.getpid())]
            if self.config_file is not None:
                command += ["--config", str(self.config_file)]
            env = {**os.environ, "VOIDVM_AGENT_SOCKET": str(self.agent_path)}
            self._agent = subprocess.Popen(command, env=env)
            preload_worker_code()  # while the agent starts
            while not agent_answers(self.agent_path) and self._agent.poll() is None:
                if time.monotonic() > deadline:
                    raise ServeError(f"the host agent did not answer on {self.agent_path}")
                time.sleep(0.1)
            if self._agent.poll() is None:
                log.info("Host agent started (pid %d)", self._agent.pid)
                return
            if time.monotonic() > retry_until:
                raise ServeError(f"the host agent exited with status {self._agent.returncode}")
            time.sleep(0.5)
        if self._agent is None:
            log.info("Using the host agent already running on %s", self.agent_path)

    # -- the workers -----------------------------------------------------------------------------
    def _spawn(self, index: int, *, replacement: bool = False) -> _Worker:
        assert self._socket is not None
        # A fork copies only the forking thread: with any other thread alive, a lock it held
        # could stay held forever in the child. `serve` has none; should one appear, spawn.
        context: ForkContext | SpawnContext = (
            multiprocessing.get_context("fork")
            if threading.active_count() == 1
            else multiprocessing.get_context("spawn")
        )
        ready = context.Event()
        process = context.Process(
            target=run_worker,
            args=(self.settings, self._socket, ready, os.getpid(), index, replacement),
            name=f"voidvm-api-{index}",
        )
        process.start()
        return _Worker(index, process, ready)

    def _await_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + WORKER_READY_SECONDS
        while not worker.ready.wait(0.1):
            if not worker.process.is_alive():
                raise ServeError(f"API worker {worker.index} exited while starting (see the log above)")
            if time.monotonic() > deadline:
                raise ServeError(f"API worker {worker.index} did not start in {WORKER_READY_SECONDS:g} s")

    # -- running -----------------------------------------------------------------------------------
    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._ensure_agent()
            preload_worker_code()  # done already if the agent was started here
            self._socket = listening_socket(self.settings.host, self.settings.port)
            for index in range(self.workers):
                if self._stopping:
                    return
                worker = self._spawn(index)
                self._workers.append(worker)
                self._await_ready(worker)
            log.info("VoidVM serving on http://%s:%d with %d API workers", self.settings.host,
                     self.settings.port, self.workers)  # fmt: skip
            while not self._stopping:
                time.sleep(CHECK_SECONDS)
                self._keep_running()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _keep_running(self) -> None:
        if self._stopping:
            return
        ours_ended = self._agent is not None and self._agent.poll() is not None
        # One found running (say, the last `serve`'s, on its way out) may end too.
        found_gone = self._agent is None and not agent_answers(self.agent_path)
        if ours_ended or found_gone:
            status = self._agent.returncode if self._agent is not None else "unknown"
            log.warning("The host agent exited (status %s); starting it again", status)
            self._agent = None
            try:
                self._ensure_agent()
            except ServeError as exc:
                log.error("%s; trying again", exc)
                time.sleep(RESTART_PAUSE_SECONDS)
        for slot, worker in enumerate(self._workers):
            if worker.process.is_alive() or self._stopping:
                continue
            log.warning("API worker %d exited (status %s); starting another", worker.index,
                        worker.process.exitcode)  # fmt: skip
            recent = [t for t in worker.restarts if time.monotonic() - t < 60]
            if len(recent) >= 5:
                time.sleep(RESTART_PAUSE_SECONDS)  # it keeps dying: do not spin
            replacement = self._spawn(worker.index, replacement=True)
            replacement.restarts = [*recent, time.monotonic()]
            self._workers[slot] = replacement

    def _shutdown(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.process.exitcode is None:
                worker.process.terminate()  # SIGTERM: uvicorn finishes what it answers, then stops
        for worker in self._workers:
            worker.process.join(30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
        if self._socket is not None:
            self._socket.close()
        if self._agent is not None and self._agent.poll() is None:
            self._agent.send_signal(signal.SIGTERM)  # it lets go of the VMs; they keep running
            try:
                self._agent.wait(30)
            except subprocess.TimeoutExpired:
                self._agent.kill()
                self._agent.wait(5)
