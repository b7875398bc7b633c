"""What a CLI invocation is given (:class:`CliDeps`) and what it builds (:class:`CliState`).

:class:`CliDeps` is the seam for tests and embedding: the client factories decide how a
client is made (tests pass one that injects an ``httpx.MockTransport``) and
``config_path`` where the stored login lives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import typer

from .._client import AsyncVoidVMClient, VoidVMClient
from .._errors import AuthenticationError, VoidVMError
from .._http import DEFAULT_BASE_URL
from ._config import ConfigStore, StoredLogin, stored_login
from ._output import Output

__all__ = [
    "AsyncClientFactory",
    "CliDeps",
    "CliState",
    "ClientFactory",
    "begin",
    "normalize_api_url",
    "state_of",
]


def normalize_api_url(url: str) -> str:
    """Accept ``http://host:3000`` as well as ``http://host:3000/api/v1``."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    path = parts.path or "/api/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


#: Refresh a token this many seconds before it expires.
_EXPIRY_MARGIN = 30.0

#: ``(base_url, token) -> client``
ClientFactory = Callable[[str, str | None], VoidVMClient]
AsyncClientFactory = Callable[[str, str | None], AsyncVoidVMClient]


def _sync_client(base_url: str, token: str | None) -> VoidVMClient:
    return VoidVMClient(base_url, token)


def _async_client(base_url: str, token: str | None) -> AsyncVoidVMClient:
    return AsyncVoidVMClient(base_url, token)


@dataclass(frozen=True)
class CliDeps:
    client_factory: ClientFactory = _sync_client
    async_client_factory: AsyncClientFactory = _async_client
    config_path: Path | None = None


@dataclass
class CliState:
    """Resolved settings for one invocation.

    URL: ``--url`` > ``VOIDVM_URL`` > stored login > the default. Token: ``--token`` >
    ``VOIDVM_TOKEN`` > the stored token, which is only used for the URL it was issued by.
    """

    deps: CliDeps
    url_override: str | None = None
    token_override: str | None = None
    output: Output = field(default_factory=Output)
    _client: VoidVMClient | None = None
    _stored: StoredLogin | None = None

    @property
    def store(self) -> ConfigStore:
        return ConfigStore(self.deps.config_path)

    def stored(self) -> StoredLogin:
        """The stored login, read once per invocation."""
        if self._stored is None:
            self._stored = self.store.load()
        return self._stored

    @property
    def url(self) -> str:
        return (self.url_override or self.stored().url or DEFAULT_BASE_URL).rstrip("/")

    @property
    def token(self) -> str | None:
        if self.token_override:
            return self.token_override
        stored = self.stored()
        if stored.token and (stored.url or "").rstrip("/") == self.url:
            return stored.token
        return None

    def _require_token(self) -> str:
        token = self.token
        if not token:
            raise AuthenticationError(
                f"not logged in to {self.url}: run `voidvm login` or set VOIDVM_TOKEN",
                code="NOT_LOGGED_IN",
            )
        return token

    def _refresh_if_expired(self) -> None:
        """Trade an expired stored token for a fresh one with its refresh token (once)."""
        stored = self.stored()
        if self.token_override or self.token != stored.token or not stored.refresh_token:
            return
        if stored.expires_at is None or time.time() < stored.expires_at - _EXPIRY_MARGIN:
            return
        client = self.deps.client_factory(self.url, None)
        try:
            result = client.auth.refresh(stored.refresh_token)
        except VoidVMError:
            return  # revoked or expired too: the request fails with a hint to log in again
        finally:
            client.close()
        self._stored = stored_login(self.url, stored.username, result)
        self.store.save(self._stored)

    def client(self) -> VoidVMClient:
        """The (lazily made) authenticated client; it announces rate-limit waits."""
        if self._client is None:
            self._refresh_if_expired()
            self._client = self.deps.client_factory(self.url, self._require_token())
            self._client.on_rate_limit = self.output.rate_limited
        return self._client

    def async_client(self) -> AsyncVoidVMClient:
        self._refresh_if_expired()
        client = self.deps.async_client_factory(self.url, self._require_token())
        client.on_rate_limit = self.output.rate_limited
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state_of(ctx: typer.Context) -> CliState:
    state = ctx.obj
    if not isinstance(state, CliState):
        raise RuntimeError("the voidvm CLI state is missing; build the app with make_app()")
    return state


def begin(ctx: typer.Context, json_mode: bool = False, quiet: bool = False) -> CliState:
    """The invocation's state with this command's ``--json``/``--quiet`` applied (the root's
    ``voidvm --json …`` counts too)."""
    state = state_of(ctx)
    state.output.json_mode = state.output.json_mode or json_mode
    state.output.quiet = state.output.quiet or quiet
    return state
