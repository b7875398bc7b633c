"""Request bodies. Unknown fields are refused (400), so nothing can be mass-assigned."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshRequest(Body):
    refresh_token: str = Field(min_length=1, max_length=4096)


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class ApiTokenCreate(Body):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class QuotaFields(Body):
    max_vms: int | None = Field(default=None, ge=0, le=100_000)
    max_cpus: int | None = Field(default=None, ge=0, le=1_000_000)
    max_memory_mb: int | None = Field(default=None, ge=0)
    max_disk_gb: int | None = Field(default=None, ge=0)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class UserCreate(Body):
    username: str = Field(min_length=3, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    email: EmailStr | None = None
    role: Literal["admin", "user"] = "user"
    quota: QuotaFields | None = None


class UserUpdate(Body):
    email: EmailStr | None = None
    role: Literal["admin", "user"] | None = None
    status: Literal["active", "disabled"] | None = None
    password: str | None = Field(default=None, min_length=1, max_length=256)
    quota: QuotaFields | None = None


class VMCreateBody(Body):
    name: str = Field(min_length=1, max_length=63)
    cpu: int = Field(ge=1)
    memory: int = Field(ge=1, description="MB")
    disk: int = Field(ge=1, description="GB")
    os: str | None = Field(default=None, max_length=64)
    description: str = Field(default="", max_length=1000)
    auto_start: bool = False


class VMUpdateBody(Body):
    name: str | None = Field(default=None, min_length=1, max_length=63)
    description: str | None = Field(default=None, max_length=1000)
    cpu: int | None = Field(default=None, ge=1)
    memory: int | None = Field(default=None, ge=1)
    disk: int | None = Field(default=None, ge=1)


class VMActionBody(Body):
    wait: bool = True
    force: bool = False
    timeout: float | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="stop/restart: seconds the guest has to answer the ACPI power button before it is "
        "killed (default: the server's `stop_timeout_seconds`, 30); 0 kills at once, as `force` does",
    )


class ConsoleTicketRequest(Body):
    type: Literal["serial", "vnc"] = "serial"


class ImageImport(Body):
    name: str = Field(min_length=1, max_length=64)
    format: Literal["qcow2", "raw", "iso"]
    url: str | None = Field(default=None, max_length=2048)
    path: str | None = Field(default=None, max_length=1024)
    aliases: list[str] = Field(default_factory=list, max_length=16)
    default: bool = False
    wait: bool = Field(
        default=True,
        description="URL imports: false answers 202 at once with the operation doing the download",
    )
