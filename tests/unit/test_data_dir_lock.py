"""DataDirLock across fork."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# In a process of its own: forking the test runner itself would copy its loop and threads.
FORKS_AND_RELEASES = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from voidvm_server.data_dir_lock import DataDirLock

    lock = DataDirLock(Path(sys.argv[1]))
    lock.acquire()
    ready, told = os.pipe()
    child = os.fork()
    if child == 0:  # the child (its fork hooks have run): outlive the parent's release, then go
        os.write(told, b"up")
        time.sleep(5)
        os._exit(0)
    try:
        assert os.read(ready, 2) == b"up"
        lock.release()
        again = DataDirLock(Path(sys.argv[1]))
        again.acquire()  # raises DataDirInUseError if the child kept the lock
        again.release()
        print("free")
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    """
)


def test_a_forked_child_never_holds_its_parents_data_dir_lock(tmp_path: Path) -> None:
    """`serve`'s workers are forked while it holds its lock: once `serve` lets go (or dies), the
    lock is free even while a worker lives on."""
    done = subprocess.run([sys.executable, "-c", FORKS_AND_RELEASES, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "free", done.stdout + done.stderr
