"""Configuration an admin can change at run time (`GET/PUT /config`), persisted in the database.

Updates are partial and deep-merged, then validated as a whole before they take effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.config import Settings
from voidvm_server.errors import ValidationError
from voidvm_server.events.bus import Event
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import ConfigRepository
from voidvm_server.services.clock import now
from voidvm_server.services.config_references import check_references
from voidvm_server.services.event_log import EventLog

KEY = "live"
CONFIG_EVENT = "config"  # a change, written for the other API workers to follow
LEGACY_USER_PREFIX = "user:"  # how `per_user` keys were spelled before they named users


RATE = r"^\d+\s*/\s*(second|minute|hour|day)$"  # what the limits library parses, e.g. "100/minute"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimits(_Section):
    """`per_user` is keyed by username or user id; then `per_role` (by role name), then `default`."""

    default: str = Field("100/minute", pattern=RATE)
    per_role: dict[str, Annotated[str, Field(pattern=RATE)]] = Field(default_factory=dict)
    per_user: dict[str, Annotated[str, Field(pattern=RATE)]] = Field(default_factory=dict)

    def limit_for(self, role: str, user_keys: tuple[str, ...] = ()) -> str:
        """The limit of a caller known by `user_keys` (its id and username) and `role`."""
        personal = next((self.per_user[k] for k in user_keys if k in self.per_user), None)
        return personal or self.per_role.get(role) or self.default


class DefaultQuota(_Section):
    max_vms: int = Field(5, ge=0, le=100_000)
    max_cpus: int = Field(16, ge=0)
    max_memory_mb: int = Field(32768, ge=0)
    max_disk_gb: int = Field(500, ge=0)


class VMBounds(_Section):
    min_cpu: int = Field(1, ge=1)
    max_cpu: int = Field(32, ge=1, le=512)
    min_memory_mb: int = Field(64, ge=16)
    max_memory_mb: int = Field(65536, ge=16)
    min_disk_gb: int = Field(1, ge=1)
    max_disk_gb: int = Field(2048, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> VMBounds:
        if self.min_cpu > self.max_cpu or self.min_memory_mb > self.max_memory_mb:
            raise ValueError("minimums must not exceed maximums")
        if self.min_disk_gb > self.max_disk_gb:
            raise ValueError("minimums must not exceed maximums")
        return self


class RestartPolicy(_Section):
    """What to do when a VM's QEMU dies without being asked to (kill -9, crash, OOM killer).

    `on-crash` starts it again after `backoff_seconds`, doubling for each restart already made
    within `window_seconds`; after `max_restarts` restarts in that window the VM stays `error`.
    """

    mode: Literal["off", "on-crash"] = "off"
    max_restarts: int = Field(3, ge=0, le=100)
    backoff_seconds: float = Field(1.0, ge=0, le=3600)
    window_seconds: float = Field(600.0, gt=0, le=7 * 86400)


class LiveConfig(_Section):
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    default_quota: DefaultQuota = Field(default_factory=DefaultQuota)
    vm_bounds: VMBounds = Field(default_factory=VMBounds)
    default_image: str = "tiny"
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)


def from_settings(settings: Settings) -> LiveConfig:
    return LiveConfig(
        rate_limits=RateLimits(default=settings.rate_limit),
        default_quota=DefaultQuota(
            max_vms=settings.default_max_vms,
            max_cpus=settings.default_max_cpus,
            max_memory_mb=settings.default_max_memory_mb,
            max_disk_gb=settings.default_max_disk_gb,
        ),
        vm_bounds=VMBounds(
            max_cpu=settings.vm_max_cpu,
            min_memory_mb=settings.vm_min_memory_mb,
            max_memory_mb=settings.vm_max_memory_mb,
            max_disk_gb=settings.vm_max_disk_gb,
        ),
        default_image=settings.default_image,
        restart_policy=RestartPolicy(
            mode=settings.restart_policy,
            max_restarts=settings.restart_max_restarts,
            backoff_seconds=settings.restart_backoff_seconds,
            window_seconds=settings.restart_window_seconds,
        ),
    )


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class LiveConfigStore:
    """Holds the current LiveConfig; services read `.current` on every use, so changes are live.

    Every API worker holds its own copy. A change is written with a `config` event carrying the
    whole new document (an internal kind: no WebSocket topic shows it), so every worker's copy
    follows as soon as its EventLog delivers that event."""

    def __init__(self, db: Database, settings: Settings, events: EventLog | None = None) -> None:
        self.db = db
        self.events = events
        self._defaults = from_settings(settings).model_dump()
        self.current = from_settings(settings)
        self._unlisten: Callable[[], None] = lambda: None

    async def load(self) -> None:
        async with self.db.reading() as s:
            self.current = await self._stored(s)

    async def _stored(self, s: AsyncSession) -> LiveConfig:
        stored = await ConfigRepository(s).get(KEY)
        if not stored:
            return self._validate(self._defaults)
        return self._validate(_without_legacy_keys(deep_merge(self._defaults, stored)))

    def start(self) -> None:
        """Follow the changes other workers make."""
        if self.events is not None:
            self._unlisten = self.events.bus.listen(self._on_event)

    def stop(self) -> None:
        self._unlisten()

    def _on_event(self, event: Event) -> None:
        if event.kind == CONFIG_EVENT:
            self.current = self._validate(event.data)

    async def update(self, patch: dict[str, Any]) -> LiveConfig:
        """Apply a partial change to the stored document (another worker may have changed it
        since this one last heard), as a whole or not at all."""
        if self.events is None:
            async with self.db.session() as s:
                candidate = await self._write(s, patch)
        else:
            async with self.events.session() as s:
                candidate = await self._write(s, patch)
                await self.events.add(s, CONFIG_EVENT, candidate.model_dump(), vm_id=None, owner_id=None)
        self.current = candidate
        return candidate

    async def _write(self, s: AsyncSession, patch: dict[str, Any]) -> LiveConfig:
        stored = await self._stored(s)
        candidate = self._validate(deep_merge(stored.model_dump(), patch))
        await check_references(s, stored, candidate)
        await ConfigRepository(s).put(KEY, candidate.model_dump(), now())
        return candidate

    @staticmethod
    def _validate(document: dict[str, Any]) -> LiveConfig:
        try:
            return LiveConfig.model_validate(document)
        except PydanticValidationError as exc:
            raise ValidationError.many(
                [(".".join(str(p) for p in e["loc"]) or "config", e["msg"]) for e in exc.errors()]
            ) from exc


def _without_legacy_keys(document: dict[str, Any]) -> dict[str, Any]:
    """A stored `per_user` key `user:<id>` becomes `<id>`, so a limit set that way still holds."""
    limits = document.get("rate_limits")
    per_user = limits.get("per_user") if isinstance(limits, dict) else None
    if isinstance(per_user, dict) and isinstance(limits, dict):
        limits["per_user"] = {k.removeprefix(LEGACY_USER_PREFIX): v for k, v in per_user.items()}
    return document
