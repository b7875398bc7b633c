"""voidvm-server: serve, migrate, user, image, doctor."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from voidvm_server import __version__
from voidvm_server.auth.passwords import PasswordHashing
from voidvm_server.config import Settings, load_settings
from voidvm_server.data_dir import prepare_data_dir
from voidvm_server.data_dir_lock import API_LOCK_FILE, LOCK_FILE, DataDirInUseError, DataDirLock
from voidvm_server.domain.models import Role, User, UserStatus
from voidvm_server.logging_setup import configure_logging
from voidvm_server.persistence.engine import Database, downgrade
from voidvm_server.services.live_config import LiveConfigStore
from voidvm_server.services.users import UserChanges, UserService

app = typer.Typer(help="VoidVM server: an API-first manager for real QEMU virtual machines.")
user_app = typer.Typer(help="Manage user accounts.")
image_app = typer.Typer(help="Manage the image store.")
app.add_typer(user_app, name="user")
app.add_typer(image_app, name="image")
console = Console()

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file", exists=True)]


def _settings(config: Path | None, **overrides: object) -> Settings:
    settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, json_lines=settings.log_json)
    return settings


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="API worker processes (default: VOIDVM_WORKERS, else one per core)"),
    ] = None,
    allow_default_admin_password: Annotated[
        bool, typer.Option(help="listen beyond loopback even with admin/admin123")
    ] = False,
    skip_tiny_image: Annotated[bool, typer.Option(help="do not build the built-in guest")] = False,
) -> None:
    """Run VoidVM: the host agent (found, or started) and the API workers (builds the built-in
    tiny guest image first if it is missing)."""
    from voidvm_server.persistence.engine import Database
    from voidvm_server.supervisor import ServeError, Supervisor, default_workers
    from voidvm_server.tiny import install_tiny_image

    settings = _settings(
        config,
        host=host,
        port=port,
        allow_default_admin_password=allow_default_admin_password or None,
    )
    # First of all, before the database or any VM: one `serve` per data directory.
    lock = _lock_data_dir(settings.data_dir, API_LOCK_FILE)
    try:
        prepare_data_dir(settings.data_dir)
        asyncio.run(_migrate(Database(settings.resolved_database_url)))  # once, before any worker
        if not skip_tiny_image:
            try:
                asyncio.run(install_tiny_image(settings))
            except Exception as exc:  # the server still runs; VMs then need an imported image
                console.print(f"[yellow]Could not build the tiny guest image: {exc}[/yellow]")
        count = workers or settings.workers or default_workers()
        try:
            Supervisor(settings, workers=count, config_file=config).run()
        except (ServeError, OSError) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
    finally:
        lock.release()


async def _migrate(db: Database) -> None:
    try:
        await db.migrate()
    finally:
        await db.close()


@app.command()
def agent(
    config: ConfigOption = None,
    exit_with: Annotated[int | None, typer.Option(hidden=True, help="stop when this pid ends")] = None,
) -> None:
    """Run the host agent: it owns this host's QEMU processes and serves the API processes on a
    private unix socket (VOIDVM_AGENT_SOCKET, by default <data dir>/agent.sock)."""
    from voidvm_server.agent.process import run_agent

    if exit_with is not None:  # started by `serve`: it stops (letting go of the VMs) with it
        from voidvm_server.supervisor import exit_with_parent

        exit_with_parent(signal.SIGTERM, exit_with)
    settings = _settings(config)
    lock = _lock_data_dir(settings.data_dir)  # the agent owns the VMs: one per data directory
    try:
        asyncio.run(run_agent(settings))
    finally:
        lock.release()


def _lock_data_dir(data_dir: Path, name: str = LOCK_FILE) -> DataDirLock:
    """The data directory's lock, taken; or exit 1 naming the server that holds it."""
    lock = DataDirLock(data_dir, name)
    try:
        lock.acquire()
    except DataDirInUseError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    return lock


@app.command()
def migrate(
    config: ConfigOption = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
    down: Annotated[bool, typer.Option(help="downgrade to the revision instead")] = False,
) -> None:
    """Apply (or roll back) database migrations."""
    settings = _settings(config)
    prepare_data_dir(settings.data_dir)
    if down:
        downgrade(settings.resolved_database_url, "base" if revision == "head" else revision)
    else:
        asyncio.run(Database(settings.resolved_database_url).migrate(revision))
    console.print(f"Database at revision {'base' if down and revision == 'head' else revision}")


@asynccontextmanager
async def _user_service(settings: Settings) -> AsyncIterator[UserService]:
    prepare_data_dir(settings.data_dir)
    db = Database(settings.resolved_database_url)
    try:
        await db.migrate()
        live = LiveConfigStore(db, settings)
        await live.load()
        hashing = PasswordHashing()
        try:
            yield UserService(db, settings, live, hashing)
        finally:
            hashing.close()
    finally:
        await db.close()


def _ask_password() -> str:
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        console.print("[red]The passwords differ[/red]")
        raise typer.Exit(2)
    return first


@user_app.command("create")
def user_create(
    username: str,
    config: ConfigOption = None,
    role: Annotated[str, typer.Option(help="admin or user")] = "user",
    email: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str | None, typer.Option(help="prompted when omitted")] = None,
) -> None:
    """Create a user."""
    settings = _settings(config)
    secret = password or _ask_password()

    async def run() -> None:
        async with _user_service(settings) as users:
            await users.create(username, secret, email=email, role=Role(role))

    asyncio.run(run())
    console.print(f"Created user {username}")


@user_app.command("list")
def user_list(config: ConfigOption = None) -> None:
    """List users."""
    settings = _settings(config)

    async def run() -> list[User]:
        async with _user_service(settings) as users:
            return (await users.list(1, 1000))[0]

    table = Table("id", "username", "role", "status", "max VMs")
    for user in asyncio.run(run()):
        table.add_row(user.id, user.username, user.role.value, user.status.value, str(user.quota.max_vms))
    console.print(table)


def _change_user(config: Path | None, username: str, changes: UserChanges) -> None:
    settings = _settings(config)

    async def run() -> None:
        async with _user_service(settings) as users:
            user = await users.by_username(username)
            await users.update(user.id, changes)

    asyncio.run(run())


@user_app.command("passwd")
def user_passwd(
    username: str,
    config: ConfigOption = None,
    password: Annotated[str | None, typer.Option(help="prompted when omitted")] = None,
) -> None:
    """Set a user's password (ends their sessions)."""
    _change_user(config, username, UserChanges(password=password or _ask_password()))
    console.print(f"Password changed for {username}")


@user_app.command("disable")
def user_disable(username: str, config: ConfigOption = None) -> None:
    """Disable a user (their tokens stop working)."""
    _change_user(config, username, UserChanges(status=UserStatus.DISABLED))
    console.print(f"Disabled {username}")


@image_app.command("build-tiny")
def image_build_tiny(
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="rebuild even if present")] = False,
) -> None:
    """Build the built-in tiny Linux guest from the host's kernel and busybox."""
    from voidvm_server.tiny import install_tiny_image

    image = asyncio.run(install_tiny_image(_settings(config), rebuild=force))
    console.print(f"Image {image.name} ({image.id}) ready; default: {image.is_default}")


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Report what this host offers: QEMU, accelerator, guest network, data directory, database."""
    from voidvm_server.agent.host import guest_network
    from voidvm_server.drivers.qemu.images import QemuImg
    from voidvm_server.drivers.qemu.probe import kvm_device_usable, probe_accel, qemu_system_version

    settings = _settings(config)

    async def gather() -> dict[str, str]:
        # The server keys its cached probe by qemu-img's version line: so must we, to read it.
        probe_key = await QemuImg(settings.qemu_img_binary).version()
        prepare_data_dir(settings.data_dir)
        choice = await probe_accel(
            settings.accel, settings.qemu_binary, probe_key, settings.resolved_cache_dir
        )
        db = Database(settings.resolved_database_url)
        try:
            await db.ping()
            database = "reachable"
        except Exception as exc:
            database = f"unreachable ({type(exc).__name__})"
        finally:
            await db.close()
        return {
            "voidvm": __version__,
            "qemu binary": shutil.which(settings.qemu_binary) or "not found",
            "qemu version": await qemu_system_version(settings.qemu_binary),
            "qemu-img version": probe_key,
            "/dev/kvm": "usable" if kvm_device_usable() else "absent or not permitted",
            "accelerator": f"{choice.accel} (requested: {settings.accel})",
            "accelerator reason": choice.reason,
            "guest network": await guest_network(settings).describe(),
            "data dir": str(settings.data_dir.resolve()),
            "database": f"{settings.resolved_database_url.split('://')[0]}: {database}",
        }

    report = asyncio.run(gather())
    table = Table("check", "result")
    for key, value in report.items():
        table.add_row(key, value)
    console.print(table)
    if report["qemu binary"] == "not found":
        sys.exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
