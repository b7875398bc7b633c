"""Download a URL to a file, refusing internal addresses (after DNS, on every redirect).

The checks keep a user from making the server reach loopback, link-local (cloud metadata) or
private networks. An admin can allow private targets for a lab with `allow_private`.

Each hop's host is resolved once, and the connection goes to an address that was checked: the
request is sent to that address with the original Host header (and, for https, the original name
for SNI and the certificate check), so a DNS answer that changes between the check and the connect
(DNS rebinding) cannot redirect it. No proxy from the environment is used, for the same reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from voidvm_server.errors import ValidationError

MAX_REDIRECTS = 5


async def check_target(url: str, *, allow_private: bool) -> list[str]:
    """The addresses `url`'s host resolves to, each one checked: connect only to these."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError("url", "must be an http or https URL with a host")
    if parts.username or parts.password:
        raise ValidationError("url", "must not carry credentials")
    try:
        addresses = await resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise ValidationError("url", f"the host '{parts.hostname}' could not be resolved") from exc
    if not addresses:
        raise ValidationError("url", f"the host '{parts.hostname}' could not be resolved")
    for text in addresses if not allow_private else ():
        if refused_address(ipaddress.ip_address(text.split("%", 1)[0])):
            raise ValidationError("url", "points at a loopback, link-local or private address")
    return list(dict.fromkeys(addresses))


# IPv6 ranges that carry or translate to IPv4 (or are deprecated), so that a gateway could take
# a connection on to an internal IPv4 address: refused outright, whatever they embed.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSITION_NETWORKS = (
    *_NAT64,
    _IPV4_COMPATIBLE,
    ipaddress.IPv6Network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.IPv6Network("2002::/16"),  # 6to4
    ipaddress.IPv6Network("2001::/32"),  # Teredo
    ipaddress.IPv6Network("fec0::/10"),  # site-local
)


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a download may not connect to `address`: anything but a global unicast address,
    and for IPv6 also the transition ranges and any address whose embedded IPv4 is refused."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(refused_address(v4) for v4 in _embedded_ipv4(address)):
            return True
        if any(address in network for network in _TRANSITION_NETWORKS):
            return True
    return not address.is_global or address.is_multicast


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [v4 for v4 in (address.ipv4_mapped, address.sixtofour) if v4 is not None]
    if address.teredo is not None:
        found += address.teredo  # (server, client)
    if address in _IPV4_COMPATIBLE or any(address in network for network in _NAT64):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))  # in the low 32 bits
    return found


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request for `url` sent to `address`: same path and Host header; for https the URL's
    host name still goes into SNI and the certificate check."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc}, extensions


@asynccontextmanager
async def _get(client: httpx.AsyncClient, url: str, *, allow_private: bool) -> AsyncIterator[httpx.Response]:
    """GET `url` (streamed) from the first of its checked addresses that accepts a connection."""
    refused: httpx.ConnectError | None = None
    for address in await check_target(url, allow_private=allow_private):
        target, headers, extensions = pinned(url, address)
        request = client.build_request("GET", target, headers=headers, extensions=extensions)
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            refused = exc
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    assert refused is not None  # check_target returns at least one address
    raise refused


def _client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a seam: tests replace it to simulate DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


ProgressReport = Callable[[int, int | None], Awaitable[None]]


async def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool = False,
    timeout: float = 60.0,
    algorithm: str = "sha256",
    on_progress: ProgressReport | None = None,
) -> str:
    """Stream `url` into `dest`; return the hex digest (`algorithm`) of what was written.
    `on_progress` hears (bytes written, bytes expected or None) after every chunk."""
    try:
        return await _download(url, dest, max_bytes, allow_private, timeout, algorithm, on_progress)
    except httpx.HTTPError as exc:  # refused, reset, timed out, bad TLS: the URL's fault, not ours
        raise ValidationError("url", f"the download failed ({type(exc).__name__})") from exc


async def _download(
    url: str,
    dest: Path,
    max_bytes: int,
    allow_private: bool,
    timeout: float,
    algorithm: str,
    on_progress: ProgressReport | None,
) -> str:
    digest = hashlib.new(algorithm)
    async with _client(timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            async with _get(client, url, allow_private=allow_private) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise ValidationError("url", f"the server answered HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ValidationError("url", f"the image is larger than {max_bytes} bytes")
                written = 0
                with dest.open("wb") as handle:
                    async for chunk in response.aiter_bytes(1024 * 1024):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ValidationError("url", f"the image is larger than {max_bytes} bytes")
                        digest.update(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                        if on_progress is not None:
                            await on_progress(written, int(declared) if declared.isdigit() else None)
                return digest.hexdigest()
    raise ValidationError("url", "too many redirects")


async def fetch_text(url: str, *, max_bytes: int = 1024 * 1024) -> str:
    async with _client(30) as client:
        for _ in range(MAX_REDIRECTS + 1):
            async with _get(client, url, allow_private=False) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                response.raise_for_status()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        break
                return bytes(body[:max_bytes]).decode(response.encoding or "utf-8", errors="replace")
    raise ValidationError("url", "too many redirects")
