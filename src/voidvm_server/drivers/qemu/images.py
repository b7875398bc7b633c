"""qemu-img: inspect images safely, make per-VM overlays and blank disks, grow them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from dataclasses import dataclass
from pathlib import Path

from voidvm_server.drivers.qemu.process import run_tool
from voidvm_server.errors import DriverError, ValidationError

INSPECT_TIMEOUT = 30.0
INSPECT_MEMORY_BYTES = 1024**3  # a hostile image must not make qemu-img eat the host


# ISO 9660: the first volume descriptor (type byte, then "CD001") starts at sector 16 of 2048 bytes.
ISO_DESCRIPTOR_OFFSET = 16 * 2048


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int


def _limit_inspector() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (INSPECT_MEMORY_BYTES, INSPECT_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (30, 30))


class QemuImg:
    def __init__(self, binary: str = "qemu-img") -> None:
        self.binary = binary

    async def inspect(self, path: Path, fmt: str) -> ImageInfo:
        """Inspect with the declared format only (never probe), and refuse external references.
        An ISO is a raw image to QEMU (qemu-img has no `iso` format) that must carry the ISO 9660
        signature."""
        if fmt == "iso" and not await self._looks_like_iso(path):
            raise ValidationError("format", "the file is not an ISO 9660 image")
        driver = "raw" if fmt == "iso" else fmt
        proc = await asyncio.create_subprocess_exec(
            self.binary, "info", "-f", driver, "--output=json", str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_limit_inspector,
        )  # fmt: skip
        try:
            async with asyncio.timeout(INSPECT_TIMEOUT):
                out, _err = await proc.communicate()
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ValidationError("file", "the image could not be inspected in time") from exc
        if proc.returncode != 0:
            raise ValidationError("format", f"the file is not a valid {fmt} image")
        info = json.loads(out)
        if info.get("backing-filename") or info.get("full-backing-filename"):
            raise ValidationError("file", "images with a backing file are not accepted")
        data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
        if data_file:
            raise ValidationError("file", "images with an external data file are not accepted")
        if driver == "raw" and await self._looks_like_qcow2(path):
            raise ValidationError("format", "the file has a qcow2 header; import it as qcow2")
        return ImageInfo(
            format=str(info.get("format", fmt)),
            virtual_size=int(info.get("virtual-size", 0)),
            actual_size=int(info.get("actual-size", 0)),
        )

    @staticmethod
    async def _looks_like_iso(path: Path) -> bool:
        def read_descriptor_id() -> bytes:
            with path.open("rb") as handle:
                handle.seek(ISO_DESCRIPTOR_OFFSET)
                return handle.read(6)

        return await asyncio.to_thread(read_descriptor_id) in (b"\x01CD001", b"\x00CD001", b"\xffCD001")

    @staticmethod
    async def _looks_like_qcow2(path: Path) -> bool:
        def read_magic() -> bytes:
            with path.open("rb") as handle:
                return handle.read(4)

        return await asyncio.to_thread(read_magic) == b"QFI\xfb"

    async def create_overlay(self, disk: Path, base: Path, base_format: str, size_bytes: int) -> None:
        await run_tool(
            [self.binary, "create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base),
             str(disk), str(size_bytes)],
            timeout=60,
            error="Could not create the VM's disk",
        )  # fmt: skip

    async def create_blank(self, disk: Path, size_bytes: int) -> None:
        await run_tool(
            [self.binary, "create", "-q", "-f", "qcow2", str(disk), str(size_bytes)],
            timeout=60,
            error="Could not create the VM's disk",
        )

    async def grow(self, disk: Path, size_bytes: int) -> None:
        await run_tool(
            [self.binary, "resize", "-q", "-f", "qcow2", str(disk), str(size_bytes)],
            timeout=60,
            error="Could not grow the VM's disk",
        )

    async def version(self) -> str:
        try:
            out = await run_tool([self.binary, "--version"], timeout=10, error="qemu-img failed")
        except (FileNotFoundError, DriverError):
            return "unavailable"
        return out.splitlines()[0] if out else "unknown"
