"""The pure-Python newc cpio writer behind the tiny guest's initramfs."""

from __future__ import annotations

import gzip
import io
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from voidvm_server.drivers.qemu import tiny_image
from voidvm_server.drivers.qemu.tiny_image import NewcWriter, TinyImageError


@dataclass
class Entry:
    name: str
    mode: int
    nlink: int
    rdev: tuple[int, int]
    data: bytes


def parse_newc(blob: bytes) -> list[Entry]:
    """Independent newc reader: checks magic, field widths and 4-byte alignment."""
    entries: list[Entry] = []
    pos = 0
    while True:
        assert pos % 4 == 0
        assert blob[pos : pos + 6] == b"070701"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        _ino, mode, _uid, _gid, nlink, _mtime, size, _maj, _min, rmaj, rmin, namesize, check = fields
        assert check == 0
        name_end = pos + 110 + namesize
        assert blob[name_end - 1] == 0
        name = blob[pos + 110 : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        data = blob[data_start : data_start + size]
        pos = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            assert pos == len(blob)
            return entries
        entries.append(Entry(name, mode, nlink, (rmaj, rmin), data))


def sample_archive() -> bytes:
    out = io.BytesIO()
    w = NewcWriter(out)
    w.add_dir("etc")
    w.add_file("etc/a", b"x")  # 1-byte body: needs 3 bytes of padding
    w.add_file("deep/er/file.txt", b"hello\n", 0o600)  # parents created on demand
    w.add_file("empty", b"")
    w.add_symlink("bin/sh", "/bin/busybox")
    w.add_chardev("dev/console", 5, 1)
    w.close()
    w.close()  # idempotent
    return out.getvalue()


def test_round_trip_with_own_reader() -> None:
    entries = {e.name: e for e in parse_newc(sample_archive())}
    assert list(entries) == [
        "etc",
        "etc/a",
        "deep",
        "deep/er",
        "deep/er/file.txt",
        "empty",
        "bin",
        "bin/sh",
        "dev",
        "dev/console",
    ]
    assert stat.S_ISDIR(entries["deep/er"].mode) and entries["deep/er"].nlink == 2
    assert entries["etc/a"].data == b"x"
    assert entries["deep/er/file.txt"].data == b"hello\n"
    assert stat.S_IMODE(entries["deep/er/file.txt"].mode) == 0o600
    assert entries["empty"].data == b""
    assert stat.S_ISLNK(entries["bin/sh"].mode)
    assert entries["bin/sh"].data == b"/bin/busybox"
    assert stat.S_ISCHR(entries["dev/console"].mode)
    assert entries["dev/console"].rdev == (5, 1)


def test_name_lengths_cover_every_padding_case() -> None:
    out = io.BytesIO()
    w = NewcWriter(out)
    for n in range(1, 9):
        w.add_file("f" * n, b"d" * n)
    w.close()
    entries = parse_newc(out.getvalue())
    assert [(e.name, e.data) for e in entries] == [("f" * n, b"d" * n) for n in range(1, 9)]


def test_writing_after_close_fails() -> None:
    w = NewcWriter(io.BytesIO())
    w.close()
    with pytest.raises(ValueError):
        w.add_file("late", b"")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed (apt: cpio)")
def test_gnu_cpio_lists_and_extracts(tmp_path: Path) -> None:
    blob = sample_archive()
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=blob, capture_output=True, check=True
    ).stdout.decode()
    assert "deep/er/file.txt" in listing.split("\n")
    assert "dev/console" in listing.split("\n")
    files = sample_archive_without_device()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames"],
        input=files,
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "deep/er/file.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "bin/sh").readlink() == Path("/bin/busybox")


def sample_archive_without_device() -> bytes:
    out = io.BytesIO()
    w = NewcWriter(out)
    w.add_file("deep/er/file.txt", b"hello\n")
    w.add_symlink("bin/sh", "/bin/busybox")
    w.close()
    return out.getvalue()


def test_gzip_stream_is_deterministic() -> None:
    def build() -> bytes:
        raw = io.BytesIO()
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            w = NewcWriter(gz)
            w.add_file("init", b"#!/bin/sh\n", 0o755)
            w.close()
        return raw.getvalue()

    assert build() == build()
    assert parse_newc(gzip.decompress(build()))[0].name == "init"


def test_missing_kernel_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny_image, "BOOT_DIR", tmp_path)
    with pytest.raises(TinyImageError, match="linux-image-cloud-amd64"):
        tiny_image.find_host_kernel()


def test_newest_kernel_wins_by_version_not_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("6.1.0-9", "6.1.0-10", "6.1.0-11"):
        (tmp_path / f"vmlinuz-{v}-amd64").write_bytes(b"")
    for v in ("6.1.0-9", "6.1.0-10"):
        (tmp_path / f"vmlinuz-{v}-cloud-amd64").write_bytes(b"")
    monkeypatch.setattr(tiny_image, "BOOT_DIR", tmp_path)
    assert tiny_image.find_host_kernel().name == "vmlinuz-6.1.0-10-cloud-amd64"


def test_missing_busybox_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny_image, "BUSYBOX_CANDIDATES", (tmp_path / "busybox",))
    with pytest.raises(TinyImageError, match="busybox-static"):
        tiny_image._find_busybox()


def test_modules_resolved_dependencies_first_and_decompressed(tmp_path: Path) -> None:
    import lzma

    kmods = {
        "kernel/virtio/virtio_ring.ko": b"ring",
        "kernel/virtio/virtio.ko.xz": lzma.compress(b"virtio"),
        "kernel/virtio/virtio_pci.ko": b"pci",
        "kernel/block/virtio_blk.ko": b"blk",
        "kernel/net/virtio_net.ko": b"net",
        "kernel/acpi/button.ko": b"button",
    }
    for rel, data in kmods.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "modules.dep").write_text(
        "kernel/virtio/virtio_ring.ko:\n"
        "kernel/virtio/virtio.ko.xz: kernel/virtio/virtio_ring.ko\n"
        "kernel/virtio/virtio_pci.ko: kernel/virtio/virtio.ko.xz kernel/virtio/virtio_ring.ko\n"
        "kernel/block/virtio_blk.ko: kernel/virtio/virtio.ko.xz kernel/virtio/virtio_ring.ko\n"
        "kernel/net/virtio_net.ko: kernel/virtio/virtio.ko.xz kernel/virtio/virtio_ring.ko\n"
        "kernel/acpi/button.ko:\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/input/evdev.ko\nkernel/fs/ext4/ext4.ko\n")
    order = tiny_image._resolve_modules(tmp_path)
    names = [name for name, _ in order]
    assert names == ["virtio_ring", "virtio", "virtio_pci", "virtio_blk", "virtio_net", "button"]
    assert tiny_image._read_module(dict(order)["virtio"]) == b"virtio"

    (tmp_path / "modules.dep").write_text("kernel/acpi/button.ko:\n")
    with pytest.raises(TinyImageError, match=r"virtio_pci.*linux-image-cloud-amd64"):
        tiny_image._resolve_modules(tmp_path)
