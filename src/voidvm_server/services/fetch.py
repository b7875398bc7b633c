"""Download a URL to a file, refusing internal addresses (after DNS, on every redirect).

The checks keep a user from making the server reach loopback, link-local (cloud metadata) or
private networks. An admin can allow private targets for a lab with `allow_private`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from voidvm_server.errors import ValidationError

MAX_REDIRECTS = 5


async def check_target(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError("url", "must be an http or https URL with a host")
    if parts.username or parts.password:
        raise ValidationError("url", "must not carry credentials")
    if allow_private:
        return
    try:
        addresses = await resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise ValidationError("url", f"the host '{parts.hostname}' could not be resolved") from exc
    for text in addresses:
        address = ipaddress.ip_address(text)
        if not address.is_global or address.is_multicast:
            raise ValidationError("url", "points at a loopback, link-local or private address")


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a seam: tests replace it to simulate DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def download(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool = False,
    timeout: float = 60.0,
    algorithm: str = "sha256",
) -> str:
    """Stream `url` into `dest`; return the hex digest (`algorithm`) of what was written."""
    try:
        return await _download(url, dest, max_bytes, allow_private, timeout, algorithm)
    except httpx.HTTPError as exc:  # refused, reset, timed out, bad TLS: the URL's fault, not ours
        raise ValidationError("url", f"the download failed ({type(exc).__name__})") from exc


async def _download(
    url: str, dest: Path, max_bytes: int, allow_private: bool, timeout: float, algorithm: str
) -> str:
    digest = hashlib.new(algorithm)
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_target(url, allow_private=allow_private)
            async with client.stream("GET", url) as response:
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
                return digest.hexdigest()
    raise ValidationError("url", "too many redirects")


async def fetch_text(url: str, *, max_bytes: int = 1024 * 1024) -> str:
    async with httpx.AsyncClient(follow_redirects=False, timeout=30) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_target(url, allow_private=False)
            response = await client.get(url)
            if response.is_redirect:
                url = urljoin(url, response.headers.get("location", ""))
                continue
            response.raise_for_status()
            return response.text[:max_bytes]
    raise ValidationError("url", "too many redirects")
