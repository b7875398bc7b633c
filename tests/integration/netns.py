"""Network namespaces for the guest-network tests, made by the test and removed whatever happens.

`isolated_network()` makes two namespaces joined by a veth pair and wired to nothing else, so no guest
traffic can leave this machine:

    host side  (`host`, where VoidVM runs passt)      outside  (`outside`, "the internet")
      vh: 10.201.0.2/24, 10.201.0.3/24  ─── veth ───    vo: 10.201.0.1/24 (the gateway),
      default via 10.201.0.1                                10.201.0.10/24 (a web server),
      169.254.0.0/16 on-link (as on a cloud VM)             169.254.169.254/16 (a metadata service)

Sockets are opened inside a namespace by a short-lived thread that enters it (setns moves only
the calling thread) and keep that namespace for their whole life, wherever they are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
HOST_ADDRESSES = ("10.201.0.2", "10.201.0.3")
GATEWAY, WEB_SERVER, METADATA = "10.201.0.1", "10.201.0.10", "169.254.169.254"
_libc = ctypes.CDLL(None, use_errno=True)


def missing_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces and passt's own user need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("passt", "passt")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class IsolatedNetwork:
    host: str
    outside: str


@contextmanager
def isolated_network() -> Iterator[IsolatedNetwork]:
    tag = secrets.token_hex(3)
    net = IsolatedNetwork(host=f"voidvm-t{tag}-h", outside=f"voidvm-t{tag}-o")
    try:
        for name in (net.host, net.outside):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", net.host, "link", "add", "vh", "type", "veth", "peer", "name", "vo", "netns", net.outside)
        for address in HOST_ADDRESSES:
            ip("-n", net.host, "addr", "add", f"{address}/24", "dev", "vh")
        for address in (f"{GATEWAY}/24", f"{WEB_SERVER}/24", f"{METADATA}/16"):
            ip("-n", net.outside, "addr", "add", address, "dev", "vo")
        ip("-n", net.host, "link", "set", "vh", "up")
        ip("-n", net.outside, "link", "set", "vo", "up")
        ip("-n", net.host, "route", "add", "default", "via", GATEWAY)
        ip("-n", net.host, "route", "add", "169.254.0.0/16", "dev", "vh")
        yield net
    finally:
        for name in (net.host, net.outside):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextmanager
def offline_netns() -> Iterator[str]:
    """A namespace with nothing but its loopback: like a host with no network at all."""
    name = f"voidvm-t{secrets.token_hex(3)}-x"
    try:
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def socket_in(netns: str, kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_open() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns: {os.strerror(errno)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, kind))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_open)
    thread.start()
    thread.join(10)
    if failed:
        raise failed[0]
    assert made, "opening a socket in the namespace timed out"
    return made[0]


def listening_in(netns: str, address: str, port: int = 0) -> socket.socket:
    sock = socket_in(netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def connect_in(netns: str, address: str, port: int, timeout: float = 5) -> socket.socket:
    sock = socket_in(netns)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def exchange_in(netns: str, address: str, port: int, send: bytes = b"", timeout: float = 5) -> bytes:
    """What a program of that namespace gets from address:port (after sending `send`)."""
    sock = await connect_in(netns, address, port, timeout)
    loop = asyncio.get_running_loop()
    data = b""
    try:
        if send:
            await loop.sock_sendall(sock, send)
        async with asyncio.timeout(timeout):
            while chunk := await loop.sock_recv(sock, 4096):
                data += chunk
    finally:
        sock.close()
    return data


@dataclass
class Listener:
    """A TCP service in a namespace: each client gets `answer`, and its address is recorded."""

    name: str
    answer: bytes
    sock: socket.socket
    peers: list[str] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, sock=self.sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(str(writer.get_extra_info("peername")[0]))
        try:
            writer.write(self.answer)
            await writer.drain()
            # Take what the client sent (an HTTP request, ...) so that closing is a FIN, not a RST.
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(reader.read(4096), 1)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.sock.close()


def nft_in(netns: str, *args: str) -> str:
    result = subprocess.run(["ip", "netns", "exec", netns, "nft", *args], capture_output=True,
                            text=True, timeout=10, check=True)  # fmt: skip
    return result.stdout
