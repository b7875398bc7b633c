"""Server settings: `VOIDVM_*` environment variables, optionally a TOML file.

There is no global instance: the CLI builds one `Settings` and passes it down.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADMIN_PASSWORD = "admin123"  # the seed's quick start relies on it

# Test-only: the points where VOIDVM_TEST_PAUSE_AT makes the VM service stop for good (so that a
# fault test can kill -9 the server exactly there). See docs/reliability.md.
PausePoint = Literal[
    "after-create-insert",  # the VM row and its quota are committed; no disk yet
    "after-create-disk",  # the disk exists; the row still says `creating`
    "before-spawn",  # `starting` is recorded; no QEMU yet
    "after-spawn",  # QEMU runs; the row still says `starting`
    "after-delete-files",  # the run directory is gone; the row still says `deleting`
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOIDVM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 3000
    data_dir: Path = Path("./data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default is a SQLite file in data_dir"
    )
    redis_url: str | None = None
    redis_prefix: str = "voidvm"

    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "voidvm"
    jwt_audience: str = "voidvm-api"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 7 * 24 * 3600

    admin_password: SecretStr | None = None
    allow_default_admin_password: bool = False

    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    login_attempts_per_minute: int = 10

    rate_limit: str = "100/minute"
    max_body_bytes: int = 1024 * 1024
    max_upload_bytes: int = 20 * 1024**3

    accel: Literal["auto", "kvm", "tcg"] = "auto"
    qemu_binary: str = "qemu-system-x86_64"
    qemu_img_binary: str = "qemu-img"
    qmp_timeout_seconds: float = 10.0
    stop_timeout_seconds: float = 30.0
    restart_policy: Literal["off", "on-crash"] = "off"  # the live `restart_policy` section's defaults
    restart_max_restarts: int = 3
    restart_backoff_seconds: float = 1.0
    restart_window_seconds: float = 600.0

    default_max_vms: int = 5
    default_max_cpus: int = 16
    default_max_memory_mb: int = 32768
    default_max_disk_gb: int = 500
    vm_min_memory_mb: int = 64
    vm_max_memory_mb: int = 65536
    vm_max_cpu: int = 32
    vm_max_disk_gb: int = 2048
    default_image: str = "tiny"
    image_downloads: bool = True
    image_allow_private_urls: bool = False
    image_url_imports: bool = True
    console_log_max_bytes: int = 1024 * 1024

    ws_max_per_user: int = 10
    ws_max_total: int = 1000
    ws_auth_grace_seconds: float = 5.0
    ws_allowed_origins: list[str] = Field(default_factory=list)
    ws_ping_interval_seconds: float = 30.0  # protocol-level pings, sent by uvicorn
    ws_revalidate_seconds: float = 5.0  # how often open sockets re-check their token
    ws_max_message_bytes: int = 64 * 1024
    ws_messages_per_second: int = 50
    ws_send_timeout_seconds: float = 30.0  # a client that takes no data for this long is cut off
    ws_ticket_ttl_seconds: float = 30.0
    console_replay_bytes: int = 4096

    # Test-only fault injection; never set it in production (the server hangs at that point).
    test_pause_at: PausePoint | None = None

    log_json: bool = False
    log_level: str = "INFO"
    metrics_public: bool = False
    stats_interval_seconds: float = 10.0

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'voidvm.db').resolve()}"

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Environment wins over the file; explicit overrides win over both."""
    values: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as handle:
            values.update(tomllib.load(handle))
    settings = Settings()
    env_set = {name for name in Settings.model_fields if name in settings.model_fields_set}
    merged = {k: v for k, v in values.items() if k not in env_set}
    merged.update({k: v for k, v in settings.model_dump().items() if k in env_set})
    merged.update(overrides)
    return Settings(**merged) if merged else settings
