"""VMLocks: one action at a time per VM, across every API worker of the host.

Each VM's lock is an asyncio lock (the tasks of this process take turns) and an exclusive
`flock` on `<data dir>/locks/<vm id>.lock` (the processes take turns). The file lock is tried
without blocking and retried after a short sleep, so a waiting task stays cancellable and no
thread is left blocked in `flock` holding a lock nobody will release. A process that dies holding
the lock releases it with its file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

RETRY_FIRST_SECONDS = 0.002
RETRY_MOST_SECONDS = 0.05


class VMLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = asyncio.Lock()
        self._fd: int | None = None

    def locked(self) -> bool:
        return self._local.locked()

    async def acquire(self) -> None:
        await self._local.acquire()
        try:
            await self._lock_file()
        except BaseException:
            self._local.release()
            raise

    async def try_acquire(self) -> bool:
        """Take the lock if nobody (here or in another process) holds it; never waits."""
        if self._local.locked():
            return False
        await self._local.acquire()  # free, so taken at once
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._local.release()
            return False
        self._fd = fd
        return True

    async def _lock_file(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        pause = RETRY_FIRST_SECONDS
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, RETRY_MOST_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock
        self._local.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class VMLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._locks: dict[str, VMLock] = {}

    def __call__(self, vm_id: str) -> VMLock:
        """The VM's lock (`vm_id` is a checked resource id: safe as a file name)."""
        lock = self._locks.get(vm_id)
        if lock is None:
            lock = self._locks[vm_id] = VMLock(self.directory / f"{vm_id}.lock")
        return lock

    def __contains__(self, vm_id: str) -> bool:
        return vm_id in self._locks

    def forget(self, vm_id: str, *, deleted: bool = False) -> None:
        """Drop this process's lock of a VM (a holder keeps its own; the file lock still keeps
        turns); `deleted`: its file goes too (a VM id is never used again)."""
        self._locks.pop(vm_id, None)
        if deleted:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{vm_id}.lock").unlink()
