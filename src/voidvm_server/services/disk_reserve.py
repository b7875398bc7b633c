"""The free-space reserve of the host's VM storage.

VM disks are thin (qcow2): they take host space only as their guests write, so the disks handed
out may add up to more than the host has. The reserve keeps room for them: creating a VM, growing
a disk and starting a VM are refused (507 INSUFFICIENT_STORAGE, before anything is written) while
a filesystem that holds VoidVM's files has less free space than the reserve. A guest write that
still finds the disk full pauses that VM (QEMU's werror=enospc) instead of failing in the guest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from voidvm_server.errors import InsufficientStorageError

MIB = 1024**2


def free_bytes(path: Path) -> int:
    """Space an unprivileged writer may still use on the filesystem holding `path` (or, while
    `path` does not exist yet, its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class DiskReserve:
    def __init__(
        self,
        paths: Sequence[Path],
        reserve_bytes: int,
        free: Callable[[Path], int] = free_bytes,
    ) -> None:
        """`paths`: the directories whose filesystems must keep the reserve free (the data dir
        and the VMs' dir, which may be a separate mount)."""
        self.paths = list(paths)
        self.reserve_bytes = reserve_bytes
        self._free = free

    def lowest_free_bytes(self) -> int:
        return min(self._free(path) for path in self.paths)

    async def check(self) -> None:
        """Raise InsufficientStorageError when any of the filesystems is under the reserve."""
        if self.reserve_bytes <= 0:
            return
        if await asyncio.to_thread(self.lowest_free_bytes) < self.reserve_bytes:
            raise InsufficientStorageError(
                f"The server is low on disk space: it keeps {self.reserve_bytes // MIB} MB free for "
                "the disks of existing VMs. Free space on the host (or delete VMs) and try again"
            )
