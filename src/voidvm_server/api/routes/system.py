"""/system, /config, /logs, /health, /ready."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psutil
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse

from voidvm_server import API_VERSION, __version__
from voidvm_server.api.deps import AdminPrincipal, ContainerDep, CurrentPrincipal
from voidvm_server.api.envelope import fail, ok
from voidvm_server.api.presenters import audit_json, pagination
from voidvm_server.api.response_models import (
    ERROR_RESPONSES,
    AuditLogList,
    Envelope,
    ErrorEnvelope,
    HealthStatus,
    LiveConfig,
    ReadyStatus,
    SystemInfo,
    SystemStats,
    VersionInfo,
)
from voidvm_server.services.monitor import PERIODS

router = APIRouter(tags=["system"], responses=ERROR_RESPONSES)


@router.get("/health", responses={200: {"model": Envelope[HealthStatus]}})
async def health() -> JSONResponse:
    return ok({"status": "ok"})


@router.get(
    "/ready",
    responses={
        200: {"model": Envelope[ReadyStatus]},
        503: {"model": ErrorEnvelope, "description": "SERVICE_UNAVAILABLE; `details` holds the checks"},
    },
)
async def ready(container: ContainerDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await container.db.ping()
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unreachable"
    checks["hypervisor"] = "ok" if container.qemu_version != "unavailable" else "unavailable"
    if all(v == "ok" for v in checks.values()):
        return ok({"status": "ready", "checks": checks})
    return fail(503, "SERVICE_UNAVAILABLE", "Not ready", checks)


@router.get("/system/version", responses={200: {"model": Envelope[VersionInfo]}})
async def version(_p: CurrentPrincipal) -> JSONResponse:
    return ok({"version": __version__, "api_version": API_VERSION})


@router.get("/system/info", responses={200: {"model": Envelope[SystemInfo]}})
async def info(principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(container.settings.data_dir))
    uname = platform.uname()
    data: dict[str, Any] = {
        "version": __version__,
        "api_version": API_VERSION,
        "uptime": round(time.time() - container.started_at, 1),
        "host": {
            "hostname": uname.node,
            "os": uname.system,
            "kernel": uname.release,
            "arch": uname.machine,
        },
        "cpu": {"count": os.cpu_count(), "percent": psutil.cpu_percent(None)},
        "memory": {
            "total_mb": memory.total // 2**20,
            "used_mb": (memory.total - memory.available) // 2**20,
        },
        "disk": {"total_gb": round(disk.total / 2**30, 1), "used_gb": round(disk.used / 2**30, 1)},
        "hypervisor": {
            "qemu_version": container.qemu_version,
            "accelerator": container.agent.accel,
            "architectures": ["x86_64"],
        },
        "database": "postgresql" if not container.db.is_sqlite else "sqlite",
        # Telling everyone that admin/admin123 still works would invite them to try it.
        "default_admin_password": container.default_admin_password if principal.is_admin else None,
    }
    return ok(data)


@router.get("/system/stats", responses={200: {"model": Envelope[SystemStats]}})
async def stats(
    _admin: AdminPrincipal,
    container: ContainerDep,
    period: Literal["1h", "24h", "7d", "30d"] = Query("1h"),
) -> JSONResponse:
    by_state = await container.system.vm_counts()
    events = await container.system.event_counts(datetime.now(UTC) - timedelta(seconds=PERIODS[period]))
    return ok({
        "period": period,
        "vms": {"total": sum(by_state.values()), "by_status": by_state},
        "resources": container.monitor.history(period),
        "sample_interval_seconds": container.monitor.interval,
        "events": events,
    })  # fmt: skip


@router.get("/config", responses={200: {"model": Envelope[LiveConfig]}})
async def get_config(_admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    return ok(container.live.current.model_dump())


@router.put("/config", responses={200: {"model": Envelope[LiveConfig]}})
@router.patch("/config", include_in_schema=False)
async def put_config(
    admin: AdminPrincipal, container: ContainerDep, patch: dict[str, Any] = Body(...)
) -> JSONResponse:
    updated = await container.live.update(patch)
    await container.audit.record("config.update", user=admin.user, target_type="config",
                                 message=",".join(sorted(patch)))  # fmt: skip
    return ok(updated.model_dump(), "Configuration updated")


@router.get("/logs", responses={200: {"model": Envelope[AuditLogList]}})
async def logs(
    principal: CurrentPrincipal,
    container: ContainerDep,
    page: int = Query(1, ge=1, le=1_000_000),
    limit: int = Query(50, ge=1, le=500),
    level: str | None = Query(None, max_length=16),
    action: str | None = Query(None, max_length=64),
    user: str | None = Query(None, max_length=64, description="a user id (admins)"),
    vm: str | None = Query(None, max_length=64),
    since: datetime | None = Query(None, alias="from"),
    until: datetime | None = Query(None, alias="to"),
) -> JSONResponse:
    user_id = user if principal.is_admin else principal.id
    entries, total = await container.audit.list(
        user_id=user_id, level=level, action=action, target_id=vm,
        since=since, until=until, page=page, limit=limit,
    )  # fmt: skip
    return ok({"logs": [audit_json(e) for e in entries], "pagination": pagination(page, limit, total)})
