"""One server per data directory: an advisory lock on `<data>/voidvm.lock`, which holds its pid.

Two servers on one data directory each find the other's QEMUs busy (a QMP socket answers one
client at a time) and put every running VM into `error`. `serve` takes this lock before it
touches the database or any VM, and the app's lifespan holds it while the app runs. flock(2)
locks belong to the open file description: a second open of the file, even in the same process,
conflicts with the first, so one `DataDirLock` object is re-entrant and is handed on rather than
opened twice. The kernel drops the lock when the process ends (kill -9 included); the file stays
and names the last holder. The descriptor is close-on-exec: QEMU, which outlives the server,
never inherits it. A forked child (`serve`'s API workers) closes its copy at once: sharing the
open file description, it would otherwise hold the lock after its parent died.
"""

from __future__ import annotations

import fcntl
import os
import weakref
from pathlib import Path
from types import TracebackType

LOCK_FILE = "voidvm.lock"
# The host agent holds LOCK_FILE (or an API process that runs the host itself, as the tests' apps
# do); `serve`, which starts the API workers, holds this one: one `serve` per data directory.
API_LOCK_FILE = "voidvm-api.lock"


class DataDirInUseError(RuntimeError):
    """Another process holds the data directory's lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"Another VoidVM server ({holder}) is already using the data directory {data_dir}; "
            "stop it first, or give this server a data directory of its own (VOIDVM_DATA_DIR)."
        )
        self.data_dir = data_dir
        self.pid = pid


_held: weakref.WeakSet[DataDirLock] = weakref.WeakSet()  # this process's locks that are held


def _drop_inherited() -> None:
    """In a forked child: close the descriptors of the parent's locks (never LOCK_UN, which would
    release the parent's lock too) and hold none."""
    for lock in list(_held):
        lock._forget()


os.register_at_fork(after_in_child=_drop_inherited)


class DataDirLock:
    """The exclusive lock of one data directory, held from `acquire` to the matching `release`."""

    def __init__(self, data_dir: Path, name: str = LOCK_FILE) -> None:
        self.data_dir = data_dir.resolve()
        self.path = self.data_dir / name
        self._fd: int | None = None
        self._holds = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise DataDirInUseError naming the holder's pid. Never blocks."""
        if self._fd is None:
            self._fd = self._take()
            _held.add(self)
        self._holds += 1

    def release(self) -> None:
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0 and self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None
            _held.discard(self)

    def _forget(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._holds = None, 0
        _held.discard(self)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.release()

    def _take(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirInUseError(self.data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None  # empty while the holder is still writing it
