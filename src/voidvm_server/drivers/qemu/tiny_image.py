"""Build VoidVM's built-in tiny Linux guest from packages installed on the host.

Kernel and modules come from Debian's ``linux-image-cloud-amd64``, userland is the static
``/bin/busybox`` from ``busybox-static``. The initramfs is a gzip'd newc cpio written here in
pure Python. The guest prints ``VoidVM tiny guest booting`` / ``... ready`` on ttyS0, gets an
address by DHCP, powers off on an ACPI power-button press and runs a root shell on ttyS0.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = [
    "TINY_KERNEL_CMDLINE",
    "NewcWriter",
    "TinyImageError",
    "TinyImageFiles",
    "build_tiny_image",
    "find_host_kernel",
]

# quiet: only errors reach the (slow, emulated) UART. earlyprintk=serial placed *after* quiet
# prints just the two KASLR lines within ~0.5 s instead of nothing for ~3 s under tcg (a sign of
# life for watchers). panic=-1: reboot instead of hanging. 8250.nr_uarts=1: don't probe phantom
# UARTs. cryptomgr.notests: skip crypto self-tests (~0.4 s under tcg).
TINY_KERNEL_CMDLINE = "console=ttyS0 quiet earlyprintk=serial panic=-1 8250.nr_uarts=1 cryptomgr.notests"

BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
KERNEL_PKG = "linux-image-cloud-amd64"

# Loaded in this order (plus dependencies from modules.dep); skipped when built in.
REQUIRED_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "button", "evdev")
OPTIONAL_MODULES = ("virtio_console", "crc32c_generic", "ext4", "af_packet", "unix")


class TinyImageError(Exception):
    """The host lacks something needed to build the tiny guest (names the Debian package)."""


@dataclass(frozen=True)
class TinyImageFiles:
    kernel: Path
    initrd: Path


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class NewcWriter:
    """Stream a newc ("070701", what the kernel's initramfs unpacker reads) cpio archive."""

    def __init__(self, out: _Writable, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._ino = 0
        self._dirs: set[str] = {""}
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: int = 0) -> None:
        if self._closed:
            raise ValueError("archive already closed")
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0,
                  os.major(rdev), os.minor(rdev), len(encoded), 0)  # fmt: skip
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        # Header+name and the file data are each padded to a multiple of 4 bytes.
        self._out.write(header + encoded + b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data + b"\0" * (-len(data) % 4))

    def _parents(self, name: str) -> str:
        name = name.strip("/")
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.add_dir("/".join(parts[:i]))
        return name

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if name not in self._dirs:
            self._parents(name)
            self._dirs.add(name)
            self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(self._parents(name), stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(self._parents(name), stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(self._parents(name), stat.S_IFCHR | mode, rdev=os.makedev(major, minor))

    def close(self) -> None:
        if not self._closed:
            self._entry("TRAILER!!!", 0, nlink=1)
            self._closed = True


def _version_key(path: Path) -> list[tuple[int, int | str]]:
    # "6.1.0-10-..." < "6.1.0-9-..." by string; compare the digit runs numerically.
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", path.name)]


def find_host_kernel() -> Path:
    kernels = sorted(BOOT_DIR.glob("vmlinuz-*-cloud-amd64"), key=_version_key)
    kernels = kernels or sorted(BOOT_DIR.glob("vmlinuz-*"), key=_version_key)
    if not kernels:
        raise TinyImageError(f"no kernel in {BOOT_DIR}: install the Debian package {KERNEL_PKG}")
    return kernels[-1]


def _find_busybox() -> Path:
    for path in BUSYBOX_CANDIDATES:
        if path.is_file():
            if _elf_has_interp(path.read_bytes()):
                raise TinyImageError(
                    f"{path} is dynamically linked: install the Debian package busybox-static"
                )
            return path
    raise TinyImageError("busybox not found: install the Debian package busybox-static")


def _elf_has_interp(elf: bytes) -> bool:
    """True for a dynamically linked ELF64 LE binary (it has a PT_INTERP program header)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise TinyImageError("busybox is not a 64-bit ELF binary: install busybox-static")
    phoff, = struct.unpack_from("<Q", elf, 0x20)  # fmt: skip
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    return any(struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def _module_name(rel: str) -> str:
    base = rel.rsplit("/", 1)[-1]
    return base[: base.index(".ko")].replace("-", "_")


def _read_module(path: Path) -> bytes:
    """Module bytes, decompressed: busybox insmod only takes plain .ko files."""
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):  # no zstd in the 3.11 stdlib
        if shutil.which("zstd") is None:
            raise TinyImageError(f"{path} is zstd-compressed: install the Debian package zstd")
        return subprocess.run(["zstd", "-dcq", str(path)], check=True, capture_output=True).stdout
    raise TinyImageError(f"unknown kernel module format: {path}")


def _resolve_modules(moddir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the wanted modules, dependencies first, built-in ones left out."""
    try:
        dep_text = (moddir / "modules.dep").read_text()
        builtin_text = (moddir / "modules.builtin").read_text()
    except OSError as exc:
        raise TinyImageError(f"{moddir} is incomplete ({exc}): reinstall {KERNEL_PKG}") from exc
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep_text.splitlines():
        if ":" in line:
            mod, rest = line.split(":", 1)
            deps[_module_name(mod)] = (mod, rest.split())
    builtin = {_module_name(line) for line in builtin_text.split()}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        rel, needs = deps[name]
        for dep in needs:  # depth-first: every dependency is loaded before its user
            visit(_module_name(dep))
        order.append((name, moddir / rel))

    for name in REQUIRED_MODULES + OPTIONAL_MODULES:
        if name in builtin:
            continue
        if name in deps:
            visit(name)
        elif name in REQUIRED_MODULES:
            raise TinyImageError(f"kernel module {name} missing in {moddir}: install {KERNEL_PKG}")
    return order


_INIT = r"""#!/bin/sh
echo "VoidVM tiny guest booting"
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
while read -r m; do insmod "/lib/modules/$m.ko" || echo "voidvm: insmod $m failed"; done \
  < /etc/modules
hostname -F /etc/hostname
ip link set lo up
# Power button -> /etc/acpi/PWRF/00000080 (acpid needs evdev's /dev/input/event*).
acpid -l /var/log/acpid.log || echo "voidvm: acpid failed to start"
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  # Waits for the first lease (slirp answers at once), then keeps renewing in the background.
  udhcpc -i eth0 -s /etc/udhcpc.script -b -t 4 -T 1 >/var/log/udhcpc.log 2>&1
fi
# busybox init reaps orphans, runs the ttyS0 shell and does the clean poweroff.
exec /sbin/init
"""

_INITTAB = """\
ttyS0::respawn:-/bin/sh
tty1::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r 2>/dev/null
"""

# "ready" is printed by the first login shell, so it means a prompt is about to appear. It always
# goes to the serial console (the shell on tty1, seen over VNC, may start first).
_PROFILE = r"""export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
PS1='\u@\h:\w\$ '
cd "$HOME"
if [ ! -e /run/voidvm-ready ]; then
  : > /run/voidvm-ready
  echo "VoidVM tiny guest ready" > /dev/ttyS0
fi
"""

_POWER_BUTTON = """#!/bin/sh
echo "VoidVM tiny guest: power button pressed, powering off" > /dev/console
exec /sbin/poweroff
"""

_UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc hook: $1 is deconfig|bound|renew|leasefail|nak; lease data comes in the environment.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    fi
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    {
      [ -n "$domain" ] && echo "search $domain"
      for ns in $dns; do echo "nameserver $ns"; done
    } > /etc/resolv.conf
    ;;
esac
exit 0
"""


def _applet_links(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True)
    links = (line.strip("/") for line in out.stdout.split())
    return [link for link in links if link and link != "bin/busybox"]  # it lists itself too


def _write_initrd(out: BinaryIO, busybox: Path, modules: list[tuple[str, Path]]) -> None:
    # mtime=0 keeps the gzip stream byte-for-byte reproducible.
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
        cpio = NewcWriter(gz)
        for d in ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "var/log", "etc/acpi"):
            cpio.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        # The kernel opens /dev/console for /init before devtmpfs is mounted.
        cpio.add_chardev("dev/console", 5, 1)
        cpio.add_chardev("dev/null", 1, 3, 0o666)
        cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
        applets = _applet_links(busybox)
        for link in applets:
            cpio.add_symlink(link, "/bin/busybox")
        if not any(a.endswith("/mkfs.ext2") for a in applets):  # Debian's build lacks the alias
            cpio.add_file("sbin/mkfs.ext2", b'#!/bin/sh\nexec mke2fs "$@"\n', 0o755)
        for name, path in modules:
            cpio.add_file(f"lib/modules/{name}.ko", _read_module(path))
        cpio.add_file("etc/modules", "".join(f"{name}\n" for name, _ in modules).encode())
        cpio.add_file("init", _INIT.encode(), 0o755)
        cpio.add_file("etc/inittab", _INITTAB.encode())
        cpio.add_file("etc/profile", _PROFILE.encode())
        cpio.add_file("etc/hostname", b"voidvm\n")
        cpio.add_file("etc/hosts", b"127.0.0.1 localhost\n127.0.1.1 voidvm\n")
        cpio.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        cpio.add_file("etc/group", b"root:x:0:\n")
        cpio.add_file("etc/resolv.conf", b"")
        cpio.add_symlink("etc/mtab", "/proc/mounts")
        cpio.add_file("etc/udhcpc.script", _UDHCPC_SCRIPT.encode(), 0o755)
        cpio.add_file("etc/acpi/PWRF/00000080", _POWER_BUTTON.encode(), 0o755)
        cpio.close()


def _atomic_write(dest: Path, fill: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_tiny_image(dest_dir: Path) -> TinyImageFiles:
    kernel = find_host_kernel()
    version = kernel.name.removeprefix("vmlinuz-")
    moddir = MODULES_ROOT / version
    if not moddir.is_dir():
        raise TinyImageError(f"no modules for {version} in {moddir}: install {KERNEL_PKG}")
    modules = _resolve_modules(moddir)
    busybox = _find_busybox()
    dest_dir.mkdir(parents=True, exist_ok=True)
    files = TinyImageFiles(kernel=dest_dir / "vmlinuz", initrd=dest_dir / "initrd.img")
    try:
        src = kernel.open("rb")  # Ubuntu-style 0600 kernels are unreadable for non-root users
    except OSError as exc:
        raise TinyImageError(f"cannot read {kernel}: {exc}") from exc
    with src:
        _atomic_write(files.kernel, lambda f: shutil.copyfileobj(src, f))
    _atomic_write(files.initrd, lambda f: _write_initrd(f, busybox, modules))
    return files
