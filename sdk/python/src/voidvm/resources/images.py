"""``/images``: disk, ISO and kernel images."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .._http import Call
from .._models import Image
from ._base import AsyncResource, SyncResource, body, path
from .operations import with_operation

__all__ = ["AsyncImages", "Images", "Upload"]

#: A file to upload: a local path, raw bytes or an open binary file.
Upload = str | os.PathLike[str] | bytes | IO[bytes]

#: Uploads and URL imports can take a while.
_IMPORT_TIMEOUT = 600.0


def _parse_list(data: Any) -> builtins.list[Image]:
    return [Image.from_json(entry) for entry in (data or {}).get("images") or []]


def _create_call(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Call[Image]:
    return Call(
        "POST",
        "/images",
        with_operation(Image.from_json),
        json=body(spec, fields),
        timeout=_IMPORT_TIMEOUT,
        envelope=True,
    )


@contextlib.contextmanager
def _opened(file: Upload) -> Iterator[bytes | IO[bytes]]:
    """The upload body; a path is opened (and closed) here so the file is streamed
    rather than read into memory."""
    if isinstance(file, str | os.PathLike):
        with open(file, "rb") as handle:
            yield handle
    else:
        yield file


def _upload_call(content: bytes | IO[bytes], name: str, format: str) -> Call[Image]:
    return Call(
        "POST",
        "/images/upload",
        Image.from_json,
        params={"name": name, "format": format},
        content=content,
        timeout=_IMPORT_TIMEOUT,
        retryable=isinstance(content, bytes),
    )


class Images(SyncResource):
    """Images (blocking)."""

    def list(self) -> builtins.list[Image]:
        return self._http.send(Call("GET", "/images", _parse_list))

    def get(self, image_id: str) -> Image:
        """An image by id or name."""
        return self._http.send(Call("GET", path("images", image_id), Image.from_json))

    def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        format: str | None = None,
        url: str | None = None,
        path: str | None = None,
        aliases: builtins.list[str] | None = None,
        wait: bool | None = None,
        **extra: Any,
    ) -> Image:
        """Import an image from a URL or a path on the server (admin). A URL import with
        ``wait=False`` answers at once (202) with the image ``downloading`` and, as
        ``image.operation``, the :class:`Operation` doing the download (its progress, to
        ``client.operations.wait`` on or cancel); by default it answers once downloaded."""
        fields = dict(
            name=name, format=format, url=url, path=path, aliases=aliases, wait=wait, **extra
        )
        return self._http.send(_create_call(spec, fields))

    def upload(self, file: Upload, *, name: str, format: str) -> Image:
        """Upload a local image file; its bytes are streamed as the request body of
        ``POST /images/upload?name=…&format=…`` (admin; qcow2, raw or iso)."""
        with _opened(file) as content:
            return self._http.send(_upload_call(content, name, format))

    def delete(self, image_id: str) -> None:
        self._http.send(Call("DELETE", path("images", image_id), lambda _: None))


class AsyncImages(AsyncResource):
    """Images (asyncio)."""

    async def list(self) -> builtins.list[Image]:
        return await self._http.send(Call("GET", "/images", _parse_list))

    async def get(self, image_id: str) -> Image:
        return await self._http.send(Call("GET", path("images", image_id), Image.from_json))

    async def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        format: str | None = None,
        url: str | None = None,
        path: str | None = None,
        aliases: builtins.list[str] | None = None,
        wait: bool | None = None,
        **extra: Any,
    ) -> Image:
        fields = dict(
            name=name, format=format, url=url, path=path, aliases=aliases, wait=wait, **extra
        )
        return await self._http.send(_create_call(spec, fields))

    async def upload(self, file: Upload, *, name: str, format: str) -> Image:
        with _opened(file) as content:
            return await self._http.send(_upload_call(content, name, format))

    async def delete(self, image_id: str) -> None:
        await self._http.send(Call("DELETE", path("images", image_id), lambda _: None))
