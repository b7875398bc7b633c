"""``/auth/*``: login, the current user, password, personal API tokens.

A successful :meth:`Auth.login` or :meth:`Auth.refresh` makes the client use the new
token for every later request; :meth:`Auth.logout` forgets it.
"""

from __future__ import annotations

import builtins
from typing import Any

from .._http import AsyncHTTP, Call, SyncHTTP
from .._models import ApiToken, CreatedApiToken, LoginResult, User
from ._base import AsyncResource, SyncResource, body, path

__all__ = ["ApiTokens", "AsyncApiTokens", "AsyncAuth", "Auth"]


def _login_call(username: str, password: str) -> Call[LoginResult]:
    payload = {"username": username, "password": password}
    return Call("POST", "/auth/login", LoginResult.from_json, json=payload, authenticated=False)


def _refresh_call(refresh_token: str) -> Call[LoginResult]:
    payload = {"refresh_token": refresh_token}
    return Call("POST", "/auth/refresh", LoginResult.from_json, json=payload, authenticated=False)


def _password_call(current_password: str, new_password: str) -> Call[None]:
    payload = {"current_password": current_password, "new_password": new_password}
    return Call("PUT", "/auth/password", lambda _: None, json=payload)


def _tokens(data: Any) -> builtins.list[ApiToken]:
    return [ApiToken.from_json(entry) for entry in (data or {}).get("tokens") or []]


def _create_token_call(name: str, expires_in_days: int | None) -> Call[CreatedApiToken]:
    payload = body({"name": name}, {"expires_in_days": expires_in_days})
    return Call("POST", "/auth/tokens", CreatedApiToken.from_json, json=payload)


_ME = Call("GET", "/auth/me", User.from_json)
_LOGOUT: Call[None] = Call("POST", "/auth/logout", lambda _: None)
_LIST_TOKENS = Call("GET", "/auth/tokens", _tokens)


def _revoke_call(token_id: str) -> Call[None]:
    return Call("DELETE", path("auth", "tokens", token_id), lambda _: None)


def _remember(resource: Auth | AsyncAuth, result: LoginResult) -> LoginResult:
    """Use the new token for later requests and keep the refresh token."""
    resource._http.token = result.token
    resource.refresh_token = result.get("refresh_token")
    return result


def _refresh_token_or_raise(given: str | None, stored: str | None) -> str:
    token = given or stored
    if not token:
        raise ValueError("no refresh token: log in first or pass refresh_token=")
    return token


class ApiTokens(SyncResource):
    """Personal API tokens for automation (blocking)."""

    def list(self) -> builtins.list[ApiToken]:
        return self._http.send(_LIST_TOKENS)

    def create(self, name: str, *, expires_in_days: int | None = None) -> CreatedApiToken:
        """Create a token; its secret is in ``.token`` and is shown only this once."""
        return self._http.send(_create_token_call(name, expires_in_days))

    def revoke(self, token_id: str) -> None:
        self._http.send(_revoke_call(token_id))


class AsyncApiTokens(AsyncResource):
    """Personal API tokens for automation (asyncio)."""

    async def list(self) -> builtins.list[ApiToken]:
        return await self._http.send(_LIST_TOKENS)

    async def create(self, name: str, *, expires_in_days: int | None = None) -> CreatedApiToken:
        return await self._http.send(_create_token_call(name, expires_in_days))

    async def revoke(self, token_id: str) -> None:
        await self._http.send(_revoke_call(token_id))


class Auth(SyncResource):
    """Authentication (blocking)."""

    def __init__(self, http: SyncHTTP) -> None:
        super().__init__(http)
        self.tokens = ApiTokens(http)
        self.refresh_token: str | None = None

    def login(self, username: str, password: str) -> LoginResult:
        return _remember(self, self._http.send(_login_call(username, password)))

    def refresh(self, refresh_token: str | None = None) -> LoginResult:
        token = _refresh_token_or_raise(refresh_token, self.refresh_token)
        return _remember(self, self._http.send(_refresh_call(token)))

    def logout(self) -> None:
        """Revoke the token in use (and its refresh token) and forget it."""
        self._http.send(_LOGOUT)
        self._http.token = None
        self.refresh_token = None

    def me(self) -> User:
        return self._http.send(_ME)

    def change_password(self, current_password: str, new_password: str) -> None:
        """Change the caller's password; every earlier token of the user stops working."""
        self._http.send(_password_call(current_password, new_password))


class AsyncAuth(AsyncResource):
    """Authentication (asyncio)."""

    def __init__(self, http: AsyncHTTP) -> None:
        super().__init__(http)
        self.tokens = AsyncApiTokens(http)
        self.refresh_token: str | None = None

    async def login(self, username: str, password: str) -> LoginResult:
        return _remember(self, await self._http.send(_login_call(username, password)))

    async def refresh(self, refresh_token: str | None = None) -> LoginResult:
        token = _refresh_token_or_raise(refresh_token, self.refresh_token)
        return _remember(self, await self._http.send(_refresh_call(token)))

    async def logout(self) -> None:
        await self._http.send(_LOGOUT)
        self._http.token = None
        self.refresh_token = None

    async def me(self) -> User:
        return await self._http.send(_ME)

    async def change_password(self, current_password: str, new_password: str) -> None:
        await self._http.send(_password_call(current_password, new_password))
