"""``/users``: accounts (admin)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from .._http import Call
from .._models import Page, User
from ._base import AsyncResource, SyncResource, body, path
from ._paging import PAGE_SIZE, has_more, page_parser

__all__ = ["AsyncUsers", "Users"]


def _list_call(page: int, limit: int) -> Call[Page[User]]:
    params = {"page": page, "limit": limit}
    return Call("GET", "/users", page_parser("users", User.from_json), params=params)


def _create_call(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> Call[User]:
    return Call("POST", "/users", User.from_json, json=body(spec, fields))


def _update_call(
    user_id: str, changes: Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> Call[User]:
    return Call("PUT", path("users", user_id), User.from_json, json=body(changes, fields))


class Users(SyncResource):
    """User accounts (blocking)."""

    def list(self) -> builtins.list[User]:
        return [*self.iter()]

    def iter(self, *, page_size: int = PAGE_SIZE) -> Iterator[User]:
        page = 1
        while True:
            result = self.list_page(page, page_size)
            yield from result.items
            if not has_more(result):
                return
            page += 1

    def list_page(self, page: int = 1, limit: int = 20) -> Page[User]:
        return self._http.send(_list_call(page, limit))

    def get(self, user_id: str) -> User:
        return self._http.send(Call("GET", path("users", user_id), User.from_json))

    def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        username: str | None = None,
        password: str | None = None,
        email: str | None = None,
        role: str | None = None,
        quota: Mapping[str, int] | None = None,
        **extra: Any,
    ) -> User:
        fields = dict(
            username=username, password=password, email=email, role=role, quota=quota, **extra
        )
        return self._http.send(_create_call(spec, fields))

    def update(
        self,
        user_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        email: str | None = None,
        role: str | None = None,
        status: str | None = None,
        quota: Mapping[str, int] | None = None,
        **extra: Any,
    ) -> User:
        fields = dict(email=email, role=role, status=status, quota=quota, **extra)
        return self._http.send(_update_call(user_id, changes, fields))

    def delete(self, user_id: str) -> None:
        self._http.send(Call("DELETE", path("users", user_id), lambda _: None))


class AsyncUsers(AsyncResource):
    """User accounts (asyncio)."""

    async def list(self) -> builtins.list[User]:
        return [user async for user in self.iter()]

    async def iter(self, *, page_size: int = PAGE_SIZE) -> AsyncIterator[User]:
        page = 1
        while True:
            result = await self.list_page(page, page_size)
            for user in result.items:
                yield user
            if not has_more(result):
                return
            page += 1

    async def list_page(self, page: int = 1, limit: int = 20) -> Page[User]:
        return await self._http.send(_list_call(page, limit))

    async def get(self, user_id: str) -> User:
        return await self._http.send(Call("GET", path("users", user_id), User.from_json))

    async def create(
        self,
        spec: Mapping[str, Any] | None = None,
        /,
        *,
        username: str | None = None,
        password: str | None = None,
        email: str | None = None,
        role: str | None = None,
        quota: Mapping[str, int] | None = None,
        **extra: Any,
    ) -> User:
        fields = dict(
            username=username, password=password, email=email, role=role, quota=quota, **extra
        )
        return await self._http.send(_create_call(spec, fields))

    async def update(
        self,
        user_id: str,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        email: str | None = None,
        role: str | None = None,
        status: str | None = None,
        quota: Mapping[str, int] | None = None,
        **extra: Any,
    ) -> User:
        fields = dict(email=email, role=role, status=status, quota=quota, **extra)
        return await self._http.send(_update_call(user_id, changes, fields))

    async def delete(self, user_id: str) -> None:
        await self._http.send(Call("DELETE", path("users", user_id), lambda _: None))
