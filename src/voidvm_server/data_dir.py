"""The data directory is the server's alone: 0700, and every file in it 0600.

It holds the database (password hashes, token hashes), the JWT secret, VM disks, consoles and
sockets. `prepare_data_dir` is called by every command that writes there, before anything is written:
it sets the process umask to 077, so that every file and directory VoidVM (and the QEMU, passt
and qemu-img it starts) creates is owner-only, whatever the umask of the shell that started it,
and tightens a directory an operator created with looser modes, and the files already in it.
Unix sockets come out 0700 under that umask (bind(2) starts from 0777); QEMU's own come out 0750
(its -daemonize sets umask 027), and the driver makes those 0600.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
# Files that may predate this rule (an older version, a copied data dir): made 0600 at start.
SENSITIVE_FILES = ("voidvm.db", "voidvm.db-wal", "voidvm.db-shm", "jwt-secret", "accel.json")


def prepare_data_dir(data_dir: Path) -> None:
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _restrict(data_dir, 0o700)
    for name in SENSITIVE_FILES:
        path = data_dir / name
        if path.is_file() and not path.is_symlink():
            _restrict(path, 0o600)


def _restrict(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        path.chmod(current & mode)
