"""Domain records as JSON: the public shape of each resource (see docs/api.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from voidvm_server.agent.port import VMStats
from voidvm_server.domain.models import GUEST_IP, VM, ApiToken, AuditEntry, Image, User
from voidvm_server.services.clock import iso as iso
from voidvm_server.services.operations import operation_json as operation_json


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "role": user.role.value,
        "status": user.status.value,
        "quota": {
            "max_vms": user.quota.max_vms,
            "max_cpus": user.quota.max_cpus,
            "max_memory_mb": user.quota.max_memory_mb,
            "max_disk_gb": user.quota.max_disk_gb,
        },
        "usage": {
            "vms": user.usage.vms,
            "cpus": user.usage.cpus,
            "memory_mb": user.usage.memory_mb,
            "disk_gb": user.usage.disk_gb,
        },
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
        "last_login_at": iso(user.last_login_at),
    }


def vm_json(vm: VM) -> dict[str, Any]:
    return {
        "id": vm.id,
        "name": vm.name,
        "description": vm.description,
        "status": vm.status.value,
        "status_reason": vm.status_reason,
        "cpu": vm.cpu,
        "memory": vm.memory_mb,
        "disk": vm.disk_gb,
        "os": vm.os,
        "image": vm.image_id,
        "owner": vm.owner_name,
        "owner_id": vm.owner_id,
        "ip": GUEST_IP if vm.pid else None,
        "ports": vm.ports,
        "created_at": iso(vm.created_at),
        "updated_at": iso(vm.updated_at),
        "started_at": iso(vm.started_at),
    }


def image_json(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "name": image.name,
        "aliases": image.aliases,
        "format": image.format.value,
        "status": image.status.value,
        "status_reason": image.status_reason,
        "size_bytes": image.size_bytes,
        "virtual_size_bytes": image.virtual_size_bytes,
        "is_default": image.is_default,
        "serves_ssh": image.serves_ssh,
        "source": image.source,
        "created_at": iso(image.created_at),
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": iso(token.created_at),
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
    }


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "timestamp": iso(entry.timestamp),
        "level": entry.level,
        "user_id": entry.user_id,
        "username": entry.username,
        "client_ip": entry.client_ip,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "result": entry.result,
        "message": entry.message,
        "request_id": entry.request_id,
    }


def stats_json(vm: VM, stats: VMStats | None, allocated_bytes: int | None, when: datetime) -> dict[str, Any]:
    return {
        "vm_id": vm.id,
        "status": vm.status.value,
        "cpu_percent": stats.cpu_percent if stats else 0.0,
        "memory": {
            "used_mb": stats.memory_used_mb if stats else 0.0,
            "total_mb": vm.memory_mb,
        },
        "disk": {
            "read_bytes": stats.disk_read_bytes if stats else 0,
            "write_bytes": stats.disk_write_bytes if stats else 0,
            "allocated_bytes": allocated_bytes,
        },
        "network": {
            "rx_bytes": stats.net_rx_bytes if stats else None,
            "tx_bytes": stats.net_tx_bytes if stats else None,
        },
        "uptime": stats.uptime_seconds if stats else 0.0,
        "timestamp": iso(when),
    }


def pagination(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "total": total, "pages": (total + limit - 1) // limit}
