"""A VM's saved serial output, bounded.

- `console.log`: the current run's latest output, never more than `max_bytes`: the chunk that
  would overflow it first moves it to `console.log.1` (replacing the one before);
- `console.log.1`: the current run's output before that (at most `max_bytes` too);
- `console.previous.log`: the end of the previous run (its last `console.log`), for post-mortems.

So a VM's logs take at most three times the cap, and the current run's saved output is always its
last `max_bytes` at least (all of it while shorter). Files are created 0600.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MIN_LOG_BYTES = 4096


@dataclass(frozen=True)
class ConsoleLimits:
    log_max_bytes: int = 1024 * 1024  # each of console.log and console.log.1
    replay_bytes: int = 4096  # the recent output a new viewer gets first


def previous_log(path: Path) -> Path:
    """The current run's older output, `console.log.1`."""
    return path.with_name(path.name + ".1")


def previous_run_log(path: Path) -> Path:
    """The end of the previous run, `console.previous.log`."""
    return path.with_name(path.stem + ".previous" + path.suffix)


def start_new_log(path: Path) -> None:
    """A new run of the VM: the end of the last run becomes `console.previous.log`; the new run
    starts with no saved output."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, previous_run_log(path))
    previous_log(path).unlink(missing_ok=True)


class RotatingLog:
    """Appends to `path`, rotating it at `max_bytes`. Thread-safe: the console writes from a
    worker thread so that a slow disk never stalls the event loop."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.path = path
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()

    def append(self, data: bytes) -> None:
        """Write `data` whole (only its last `max_bytes` when it alone is bigger than the cap).
        A full disk raises OSError; the log stays usable and within its cap."""
        if not data:
            return
        data = data[-self.max_bytes :]
        with self._lock:
            fd = self._open()
            if self._size + len(data) > self.max_bytes:
                fd = self._rotate()
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    self._size += written
                    view = view[written:]
            except OSError:
                self._size = os.fstat(fd).st_size  # a partial write still counts
                raise

    def open(self) -> None:
        """Create the file now (it would be on the first write): a running VM has a log."""
        with self._lock:
            self._open()

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _rotate(self) -> int:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, previous_log(self.path))
        return self._open()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_tail(path: Path, limit: int) -> tuple[bytes, int]:
    """The last `limit` bytes of the current run's saved output (across `console.log.1` and
    `console.log`) and the number of bytes both files hold. Consistent with a concurrent rotation:
    the current log is opened first, and a `console.log.1` that turns out to be that same file is
    skipped."""
    with contextlib.ExitStack() as stack:
        opened: list[tuple[BinaryIO, int]] = []  # newest first
        inodes: set[int] = set()
        for candidate in (path, previous_log(path)):
            try:
                handle = stack.enter_context(candidate.open("rb"))
            except FileNotFoundError:
                continue
            st = os.fstat(handle.fileno())
            if st.st_ino in inodes:
                continue
            inodes.add(st.st_ino)
            opened.append((handle, st.st_size))
        total = sum(size for _, size in opened)
        parts: list[bytes] = []
        wanted = limit
        for reader, size in opened:
            if wanted <= 0:
                break
            take = min(wanted, size)
            reader.seek(size - take)
            parts.append(reader.read(take))
            wanted -= take
        return b"".join(reversed(parts)), total
