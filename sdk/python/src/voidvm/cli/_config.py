"""The CLI's stored login: ``$XDG_CONFIG_HOME/voidvm/config.json`` (default
``~/.config/voidvm/config.json``), mode 0600 in a 0700 directory."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import VoidVMError

__all__ = ["ConfigError", "ConfigStore", "StoredLogin", "default_config_path", "stored_login"]


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if env is None else env
    base = environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "voidvm" / "config.json"


@dataclass(frozen=True)
class StoredLogin:
    url: str | None = None
    token: str | None = None
    username: str | None = None
    #: Single use: the CLI trades it for a new token (and a new refresh token) once the token
    #: has expired, so a login lasts the refresh token's lifetime rather than the token's.
    refresh_token: str | None = None
    expires_at: float | None = None  # epoch seconds


def stored_login(url: str, username: str | None, result: Mapping[str, Any]) -> StoredLogin:
    """What to keep of a login or refresh answer."""
    expires_in = result.get("expires_in")
    return StoredLogin(
        url=url,
        token=str(result["token"]),
        username=username,
        refresh_token=_str_or_none(result.get("refresh_token")),
        expires_at=time.time() + expires_in if isinstance(expires_in, int | float) else None,
    )


class ConfigStore:
    """Reads and writes the stored login; writes are atomic and private."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_config_path()

    def load(self) -> StoredLogin:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return StoredLogin()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path} does not hold a JSON object")
        return StoredLogin(
            url=_str_or_none(raw.get("url")),
            token=_str_or_none(raw.get("token")),
            username=_str_or_none(raw.get("username")),
            refresh_token=_str_or_none(raw.get("refresh_token")),
            expires_at=raw.get("expires_at")
            if isinstance(raw.get("expires_at"), int | float)
            else None,
        )

    def save(self, login: StoredLogin) -> None:
        payload = {k: v for k, v in vars(login).items() if v is not None}
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2)
                handle.write("\n")
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise


class ConfigError(VoidVMError):
    """The config file exists but cannot be used."""

    default_code = "CONFIG_ERROR"


def _number_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
