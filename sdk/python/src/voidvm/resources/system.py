"""``/system/*``, ``/config``, ``/logs``, ``/roles``, ``/permissions``, ``/health``, ``/ready``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._http import Call
from .._models import Page, Record
from ._base import AsyncResource, SyncResource
from ._paging import page_parser

__all__ = ["AsyncSystem", "System"]


def _records(key: str) -> Callable[[Any], list[Record]]:
    def parse(data: Any) -> list[Record]:
        return [Record.from_json(entry) for entry in (data or {}).get(key) or []]

    return parse


def _maybe_record(data: Any) -> Record:
    return Record.from_json(data if isinstance(data, dict) else {})


_INFO = Call("GET", "/system/info", Record.from_json)
_VERSION = Call("GET", "/system/version", Record.from_json)
_CONFIG = Call("GET", "/config", Record.from_json)
_ROLES: Call[list[Record]] = Call("GET", "/roles", _records("roles"))
_PERMISSIONS: Call[list[Record]] = Call("GET", "/permissions", _records("permissions"))
_HEALTH = Call("GET", "/health", _maybe_record, authenticated=False)
_READY = Call("GET", "/ready", _maybe_record, authenticated=False)


def _stats_call(period: str | None) -> Call[Record]:
    return Call("GET", "/system/stats", Record.from_json, params={"period": period})


def _update_config_call(patch: Mapping[str, Any]) -> Call[Record]:
    return Call("PUT", "/config", Record.from_json, json=dict(patch))


def _logs_call(page: int, limit: int, filters: Mapping[str, Any]) -> Call[Page[Record]]:
    params = {"page": page, "limit": limit, **filters}
    return Call("GET", "/logs", page_parser("logs", Record.from_json), params=params)


class System(SyncResource):
    """Server information and administration (blocking)."""

    def info(self) -> Record:
        """Version, uptime, host, resources, QEMU version and accelerator (any user)."""
        return self._http.send(_INFO)

    def version(self) -> Record:
        """``{version, api_version}`` (any user)."""
        return self._http.send(_VERSION)

    def stats(self, period: str | None = None) -> Record:
        """VM counts and usage history; ``period`` is ``1h``, ``24h``, ``7d`` or ``30d``."""
        return self._http.send(_stats_call(period))

    def get_config(self) -> Record:
        return self._http.send(_CONFIG)

    def update_config(self, patch: Mapping[str, Any]) -> Record:
        """Deep-merge ``patch`` into the server configuration; returns the result."""
        return self._http.send(_update_config_call(patch))

    def logs(self, page: int = 1, limit: int = 50, **filters: Any) -> Page[Record]:
        """One page of the audit log; filters such as ``level``, ``user``, ``vm``,
        ``from``/``to`` are passed as query parameters."""
        return self._http.send(_logs_call(page, limit, filters))

    def roles(self) -> list[Record]:
        return self._http.send(_ROLES)

    def permissions(self) -> list[Record]:
        return self._http.send(_PERMISSIONS)

    def health(self) -> Record:
        return self._http.send(_HEALTH)

    def ready(self) -> Record:
        return self._http.send(_READY)


class AsyncSystem(AsyncResource):
    """Server information and administration (asyncio)."""

    async def info(self) -> Record:
        return await self._http.send(_INFO)

    async def version(self) -> Record:
        return await self._http.send(_VERSION)

    async def stats(self, period: str | None = None) -> Record:
        return await self._http.send(_stats_call(period))

    async def get_config(self) -> Record:
        return await self._http.send(_CONFIG)

    async def update_config(self, patch: Mapping[str, Any]) -> Record:
        return await self._http.send(_update_config_call(patch))

    async def logs(self, page: int = 1, limit: int = 50, **filters: Any) -> Page[Record]:
        return await self._http.send(_logs_call(page, limit, filters))

    async def roles(self) -> list[Record]:
        return await self._http.send(_ROLES)

    async def permissions(self) -> list[Record]:
        return await self._http.send(_PERMISSIONS)

    async def health(self) -> Record:
        return await self._http.send(_HEALTH)

    async def ready(self) -> Record:
        return await self._http.send(_READY)
