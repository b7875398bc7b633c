"""Everything the routes need, built once by the app's lifespan (the composition root)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from voidvm_server.agent.port import HostAgent
from voidvm_server.api.hosts import HostPolicy
from voidvm_server.api.ws.hub import ConnectionHub
from voidvm_server.auth.tokens import TokenService
from voidvm_server.config import Settings
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.events.bus import EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.services.audit import AuditLog
from voidvm_server.services.auth import AuthService
from voidvm_server.services.console import ConsoleHub
from voidvm_server.services.event_log import EventLog
from voidvm_server.services.host_duty import HostDuty
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore
from voidvm_server.services.monitor import ResourceMonitor
from voidvm_server.services.operations import OperationService
from voidvm_server.services.ratelimit import RateLimiter
from voidvm_server.services.system import SystemService
from voidvm_server.services.tasks import BackgroundTasks
from voidvm_server.services.tickets import TicketService
from voidvm_server.services.users import UserService
from voidvm_server.services.vms import VMService
from voidvm_server.services.workers import WorkerPresence


@dataclass
class Container:
    settings: Settings
    db: Database
    agent: HostAgent
    qemu_img: QemuImg
    bus: EventBus
    events: EventLog
    limiter: RateLimiter
    live: LiveConfigStore
    tokens: TokenService
    auth: AuthService
    users: UserService
    images: ImageService
    vms: VMService
    operations: OperationService
    tasks: BackgroundTasks
    audit: AuditLog
    monitor: ResourceMonitor
    system: SystemService
    consoles: ConsoleHub
    tickets: TicketService
    presence: WorkerPresence
    duty: HostDuty
    ws_hub: ConnectionHub
    host_policy: HostPolicy
    qemu_version: str = "unknown"
    default_admin_password: bool = False
    started_at: float = field(default_factory=time.time)
