"""create_app and its lifespan: the one place where VoidVM's parts are wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from voidvm_server import __version__
from voidvm_server.agent.host import DriverFactory, build_agent
from voidvm_server.api import docs, errors
from voidvm_server.api.container import Container
from voidvm_server.api.hosts import HostPolicy, hostname
from voidvm_server.api.metrics import RequestMetrics
from voidvm_server.api.middleware import RequestContextMiddleware
from voidvm_server.api.routes import auth, images, metrics, system, users, vms
from voidvm_server.api.routes import operations as operation_routes
from voidvm_server.api.routes.images import UPLOAD_PATH
from voidvm_server.api.ws import logfilter as ws_logfilter
from voidvm_server.api.ws import routes as ws_routes
from voidvm_server.api.ws.hub import ConnectionHub
from voidvm_server.auth.passwords import PasswordHashing
from voidvm_server.auth.tokens import TokenService, load_or_create_secret
from voidvm_server.config import Settings
from voidvm_server.data_dir import prepare_data_dir
from voidvm_server.data_dir_lock import API_LOCK_FILE, LOCK_FILE, DataDirLock
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.events.bus import EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.services.audit import AuditLog
from voidvm_server.services.auth import AuthService
from voidvm_server.services.console import ConsoleHub
from voidvm_server.services.disk_reserve import MIB, DiskReserve
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.host_duty import HostDuty
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore
from voidvm_server.services.login_guard import LoginGuard
from voidvm_server.services.monitor import ResourceMonitor
from voidvm_server.services.operations import OperationService
from voidvm_server.services.ratelimit import RateLimiter
from voidvm_server.services.system import SystemService
from voidvm_server.services.tasks import BackgroundTasks
from voidvm_server.services.tickets import TicketService
from voidvm_server.services.users import UserService
from voidvm_server.services.vm_recovery import SERVER_DOWN, WORKER_GONE
from voidvm_server.services.vms import VMService
from voidvm_server.services.workers import WorkerPresence

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


class DefaultPasswordRefused(RuntimeError):
    pass


def host_names(settings: Settings) -> frozenset[str]:
    # An entry written with a port or a trailing dot still names its host.
    return frozenset(hostname(name) or name for name in settings.answered_hosts)


def disk_reserve(settings: Settings) -> DiskReserve:
    # The VMs' directory may be a mount of its own: both filesystems must keep the reserve.
    directories = [settings.data_dir, settings.data_dir / "vms"]
    return DiskReserve(directories, settings.disk_reserve_mb * MIB)


async def build_container(settings: Settings, driver_factory: DriverFactory | None) -> Container:
    prepare_data_dir(settings.data_dir)
    db = Database(settings.resolved_database_url)
    await db.migrate()
    secret = (
        settings.jwt_secret.get_secret_value()
        if settings.jwt_secret
        else load_or_create_secret(settings.data_dir)
    )
    qemu_img = QemuImg(settings.qemu_img_binary)
    qemu_version = await qemu_img.version()
    agent = await build_agent(settings, qemu_version, driver_factory)
    bus = EventBus()
    events = EventLog(db, bus)
    # One file every API worker of the host shares (Redis instead, when configured).
    limiter = RateLimiter(
        settings.redis_url, settings.redis_prefix, shared_path=settings.data_dir / "limits.sqlite"
    )
    live = LiveConfigStore(db, settings, events)
    await live.load()
    tokens = TokenService(
        secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=settings.access_token_ttl_seconds,
        refresh_ttl=settings.refresh_token_ttl_seconds,
    )
    tasks = BackgroundTasks()
    presence = WorkerPresence(db)
    audit = AuditLog(db)
    operations = OperationService(
        db, events, tasks, retention_days=settings.operation_retention_days, presence=presence
    )
    images = ImageService(
        db, settings, qemu_img, default_image=lambda: live.current.default_image, operations=operations
    )
    hashing = PasswordHashing(
        workers=settings.password_hash_workers, max_in_flight=settings.login_max_concurrent
    )
    users = UserService(db, settings, live, hashing)
    auth_service = AuthService(db, tokens, LoginGuard(limiter, settings), hashing, settings)
    vms = VMService(
        db, agent, images, events, live, settings, disk_reserve(settings), operations, tasks, audit
    )
    return Container(
        settings=settings,
        db=db,
        agent=agent,
        qemu_img=qemu_img,
        bus=bus,
        events=events,
        limiter=limiter,
        live=live,
        tokens=tokens,
        auth=auth_service,
        users=users,
        images=images,
        vms=vms,
        duty=HostDuty(settings.data_dir, vms),
        operations=operations,
        tasks=tasks,
        audit=audit,
        monitor=ResourceMonitor(agent, settings.stats_interval_seconds),
        system=SystemService(db),
        consoles=ConsoleHub(agent, bus),
        tickets=TicketService(db, settings.ws_ticket_ttl_seconds),
        presence=presence,
        ws_hub=ConnectionHub(
            bus,
            auth_service.revalidate,
            max_per_user=settings.ws_max_per_user,
            max_total=settings.ws_max_total,
            max_anonymous=settings.ws_max_anonymous,
            max_anonymous_per_client=settings.ws_max_anonymous_per_client,
            revalidate_seconds=settings.ws_revalidate_seconds,
            presence=presence,
        ),
        host_policy=host_policy(settings),
        qemu_version=qemu_version.removeprefix("qemu-img version ").split(" ")[0],
    )


async def start_services(container: Container, *, replacement: bool = False) -> None:
    """`replacement`: this worker stands in for one of `serve`'s that died, while the rest of the
    server ran on (what it finds half-done was left by that worker, not by a server stop)."""
    settings = container.settings
    container.live.start()  # listening before the events start: no change falls between
    await container.events.start()
    await container.live.load()  # again: a change made since build_container is in it now
    await container.presence.start()
    await container.users.ensure_admin()
    container.default_admin_password = await container.users.admin_uses_default_password()
    if container.default_admin_password:
        if not settings.is_loopback and not settings.allow_default_admin_password:
            raise DefaultPasswordRefused(
                f"Refusing to listen on {settings.host} while 'admin' still has the default "
                "password 'admin123'. Set VOIDVM_ADMIN_PASSWORD before the first start, change the "
                "password, or set VOIDVM_ALLOW_DEFAULT_ADMIN_PASSWORD=true."
            )
        log.warning(
            "SECURITY: the 'admin' account still uses the default password 'admin123'. "
            "Change it with PUT /api/v1/auth/password or 'voidvm-server user passwd admin'."
        )
    await container.operations.recover()  # first: the image store's recovery reads what it left running
    await container.images.recover(at_start=True)
    container.operations.start_reaping(then=container.images.recover)
    container.operations.start_pruning()
    container.events.start_pruning()
    # This worker records the host's events, or waits its turn.
    await container.duty.start(meanwhile=WORKER_GONE if replacement else SERVER_DOWN)
    container.auth.start()
    container.monitor.start()
    container.consoles.start()
    container.ws_hub.start()
    log.info("VoidVM %s ready (accelerator: %s)", __version__, container.agent.accel)


async def stop_services(container: Container) -> None:
    await container.ws_hub.stop()
    container.live.stop()
    await container.consoles.close()
    await container.monitor.stop()
    await container.auth.stop()
    await container.limiter.close()
    await container.vms.close()  # the host's events stop being recorded here ...
    await container.duty.stop()  # ... before another worker may take the duty
    await container.tasks.close()
    await container.operations.close()
    await container.presence.stop()  # last: the others fail this worker's operations once it is gone
    await container.events.close()
    await container.agent.close()
    await container.db.close()


def host_policy(settings: Settings) -> HostPolicy:
    return HostPolicy(host_names(settings), any_host="*" in settings.allowed_hosts)


def create_app(
    settings: Settings,
    *,
    driver_factory: DriverFactory | None = None,
    data_dir_lock: AbstractContextManager[object] | None = None,
    on_ready: Callable[[], None] | None = None,
    replacement: bool = False,
) -> FastAPI:
    """The app; its lifespan holds `data_dir_lock` (taken here when not given) while it runs: the
    data directory's, or the API's own when the host agent runs apart (`agent_socket`); an API
    worker of `serve` is given a null one (the supervisor holds the lock). `on_ready` is called
    once the services have started; `replacement` as in `start_services`."""
    lock = data_dir_lock
    if lock is None:
        lock = DataDirLock(settings.data_dir, LOCK_FILE if settings.agent_socket is None else API_LOCK_FILE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with lock:  # before the database or any VM is touched; released at shutdown
            container = await build_container(settings, driver_factory)
            app.state.container = container
            try:
                await start_services(container, replacement=replacement)
                if on_ready is not None:
                    on_ready()
                yield
            finally:
                await stop_services(container)

    app = FastAPI(
        title="VoidVM API",
        version=__version__,
        description="Manage real QEMU virtual machines. Every response uses the VoidVM envelope.",
        lifespan=lifespan,
        docs_url=None,  # served by api/docs.py from packaged assets, not from a CDN
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    docs.install(app, docs_url=f"{API_PREFIX}/docs", openapi_url=f"{API_PREFIX}/openapi.json")
    app.state.registry = CollectorRegistry()
    app.state.request_metrics = RequestMetrics(app.state.registry)
    errors.install(app)
    for module in (auth, users, vms, images, operation_routes, system):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(metrics.router)
    app.include_router(ws_routes.router)
    ws_logfilter.install()
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=(UPLOAD_PATH,),
        host_policy=host_policy(settings),
        body_timeout=settings.body_timeout_seconds,
        metrics=app.state.request_metrics,
        api_prefix=API_PREFIX,
    )
    return app
