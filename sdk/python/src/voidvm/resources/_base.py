"""What every resource shares: the connection it talks through and safe paths."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from .._http import AsyncHTTP, SyncHTTP

__all__ = ["AsyncResource", "SyncResource", "body", "path"]


def path(*segments: str) -> str:
    """Join path segments, percent-encoding each one (ids never smuggle a ``/``)."""
    return "/" + "/".join(quote(str(segment), safe="") for segment in segments)


def body(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a dict given positionally (as in the user's docs) with keyword arguments;
    keyword arguments that are ``None`` are left out."""
    merged: dict[str, Any] = dict(spec or {})
    merged.update({key: value for key, value in fields.items() if value is not None})
    return merged


class SyncResource:
    def __init__(self, http: SyncHTTP) -> None:
        self._http = http


class AsyncResource:
    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http
