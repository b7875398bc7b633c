"""What a CLI invocation is given (:class:`CliDeps`) and what it builds (:class:`CliState`).

:class:`CliDeps` is the seam for tests and embedding: the client factories decide how a
client is made (tests pass one that injects an ``httpx.MockTransport``) and
``config_path`` where the stored login lives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import typer

from .._client import AsyncVoidVMClient, VoidVMClient
from .._errors import AuthenticationError
from .._http import DEFAULT_BASE_URL
from ._config import ConfigStore, StoredLogin
from ._output import Output

__all__ = ["AsyncClientFactory", "CliDeps", "CliState", "ClientFactory", "state_of"]

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

    def client(self) -> VoidVMClient:
        """The (lazily made) authenticated client."""
        if self._client is None:
            self._client = self.deps.client_factory(self.url, self._require_token())
        return self._client

    def async_client(self) -> AsyncVoidVMClient:
        return self.deps.async_client_factory(self.url, self._require_token())

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state_of(ctx: typer.Context) -> CliState:
    state = ctx.obj
    if not isinstance(state, CliState):
        raise RuntimeError("the voidvm CLI state is missing; build the app with make_app()")
    return state
