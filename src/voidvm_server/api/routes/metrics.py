"""GET /metrics: Prometheus text format. Admin-only unless VOIDVM_METRICS_PUBLIC=true."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from voidvm_server.api.deps import ContainerDep, admin_principal, current_principal
from voidvm_server.api.metrics import LiveCollector

router = APIRouter(tags=["system"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, container: ContainerDep) -> Response:
    if not container.settings.metrics_public:
        await admin_principal(await current_principal(request, container))
    by_state = await container.system.vm_counts()
    latest = container.monitor.latest()
    running = await container.monitor.running_vms()
    snapshot: dict[str, object] = {
        "vms_by_state": by_state,
        "qemu_processes": len(running),
        "websockets": container.ws_hub.total,
        "vm_cpu": latest.vm_cpu_percent if latest else {},
        "vm_memory": latest.vm_memory_mb if latest else {},
    }
    registry = CollectorRegistry()
    registry.register(LiveCollector(lambda: snapshot))
    body = generate_latest(request.app.state.registry) + generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
