"""Server settings: `VOIDVM_*` environment variables, optionally a TOML file.

There is no global instance: the CLI builds one `Settings` and passes it down.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_ADMIN_PASSWORD = "admin123"  # the seed's quick start relies on it
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# A list read from one environment variable as "a, b, c" (or a TOML array).
CommaList = Annotated[list[str], NoDecode]

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
    # Host names the server answers to, besides localhost, 127.0.0.1, [::1] and a specific listen
    # address; "*" answers to any (then DNS rebinding protection is off). See docs/security.md.
    allowed_hosts: CommaList = Field(default_factory=list)
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or networks).
    trusted_proxies: CommaList = Field(default_factory=list)
    header_timeout_seconds: float = 10.0  # a request's line and headers must arrive within this
    body_timeout_seconds: float = 30.0  # the longest wait for the next piece of a request body
    max_connections: int = 2048  # open HTTP and WebSocket connections; more answer 503
    data_dir: Path = Path("./data")
    # What this host's VoidVMs may share and rebuild at will (the accelerator probe's answer):
    # by default /var/cache/voidvm for root, else $XDG_CACHE_HOME/voidvm or ~/.cache/voidvm.
    cache_dir: Path | None = None
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

    login_max_failures: int = 5  # per account and client address, within login_lockout_seconds
    login_lockout_seconds: int = 300
    login_max_failures_per_account: int = 100  # from all addresses together, same window
    login_attempts_per_minute: int = 10  # failed logins per client address, any account
    login_max_concurrent: int = 8  # password checks in flight; more answer 429 LOGIN_BUSY
    password_hash_workers: int = 1  # threads that run argon2 (each check takes ~0.1 s of CPU)

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

    # Guest networking: one passt per VM, run as `guest_net_user` (when the server is root) inside
    # `guest_netns` (a name under /run/netns, as `ip netns` makes; None = the host's namespace).
    # The host agent's socket (`voidvm-server agent`). `serve` uses <data dir>/agent.sock when it is
    # None; an app built without one (the tests') runs the host in its own process.
    agent_socket: Path | None = None
    workers: int | None = Field(default=None, ge=1, le=64)  # `serve`'s API processes; None: one per core
    passt_binary: str | None = None  # None: the one scripts/build-passt.sh installs, else PATH's
    guest_netns: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    guest_net_user: str = Field(default="voidvm-net", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Not root, or no nft: guests get QEMU's restricted network (no outbound) unless this is set,
    # and then passt runs without the fence, so guests can reach this host's loopback services.
    guest_network_unfenced: bool = False

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
    # Host disk protection: console.log is rotated at this size (console.log.1 keeps the output
    # before it, console.previous.log the end of the last run: at most 3x per VM); creates, disk
    # growth and starts answer 507 INSUFFICIENT_STORAGE while the data dir's (or vms dir's)
    # filesystem has less free space than the reserve (0 switches the check off).
    console_log_max_bytes: int = Field(default=1024 * 1024, ge=4096)
    disk_reserve_mb: int = Field(default=1024, ge=0)

    ws_max_per_user: int = 10
    ws_max_total: int = 1000  # authenticated sockets
    ws_max_anonymous: int = 100  # sockets still in their auth grace period, from all clients
    ws_max_anonymous_per_client: int = 10  # ... from one client address
    ws_auth_grace_seconds: float = 5.0
    ws_allowed_origins: CommaList = Field(default_factory=list)
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
    operation_retention_days: float = 30.0  # finished operations older than this are deleted

    @field_validator("allowed_hosts", "trusted_proxies", "ws_allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def answered_hosts(self) -> frozenset[str]:
        """Host names (lower case, no port, no brackets) that requests may name in `Host`."""
        names = {*LOOPBACK_NAMES, *(h.strip().lower().strip("[]") for h in self.allowed_hosts)}
        if self.host not in {"0.0.0.0", "::", ""}:
            names.add(self.host.lower().strip("[]"))
        return frozenset(names)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'voidvm.db').resolve()}"

    @property
    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if os.geteuid() == 0:
            return Path("/var/cache/voidvm")
        base = os.environ.get("XDG_CACHE_HOME", "")
        if not os.path.isabs(base):  # unset, or relative (the XDG rules say: ignore it)
            try:
                base = str(Path.home() / ".cache")
            except RuntimeError:  # no home at all: the data directory's own
                return self.data_dir / "cache"
        return Path(base) / "voidvm"

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
