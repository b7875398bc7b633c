"""/users, /roles, /permissions: account management (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from voidvm_server.api.deps import AdminPrincipal, ContainerDep
from voidvm_server.api.envelope import ok
from voidvm_server.api.presenters import pagination, user_json
from voidvm_server.api.response_models import (
    ERROR_RESPONSES,
    EmptyEnvelope,
    Envelope,
    PermissionList,
    RoleList,
    UserList,
    UserPublic,
)
from voidvm_server.api.schemas import UserCreate, UserUpdate
from voidvm_server.auth.permissions import PERMISSIONS, ROLE_PERMISSIONS
from voidvm_server.domain.models import Role, UserStatus
from voidvm_server.services.users import UserChanges

router = APIRouter(tags=["users"], responses=ERROR_RESPONSES)


@router.get("/users", responses={200: {"model": Envelope[UserList]}})
async def list_users(
    _admin: AdminPrincipal,
    container: ContainerDep,
    page: int = Query(1, ge=1, le=1_000_000),
    limit: int = Query(20, ge=1, le=100),
) -> JSONResponse:
    users, total = await container.users.list(page, limit)
    return ok({"users": [user_json(u) for u in users], "pagination": pagination(page, limit, total)})


@router.post("/users", status_code=201, responses={201: {"model": Envelope[UserPublic]}})
async def create_user(body: UserCreate, admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    user = await container.users.create(
        body.username,
        body.password,
        email=body.email,
        role=Role(body.role),
        quota=body.quota.as_dict() if body.quota else None,
    )
    await container.audit.record("user.create", user=admin.user, target_type="user", target_id=user.id)
    return ok(user_json(user), "User created", 201)


@router.get("/users/{user_id}", responses={200: {"model": Envelope[UserPublic]}})
async def get_user(user_id: str, _admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    return ok(user_json(await container.users.get(user_id)))


@router.put("/users/{user_id}", responses={200: {"model": Envelope[UserPublic]}})
@router.patch("/users/{user_id}", include_in_schema=False)
async def update_user(
    user_id: str, body: UserUpdate, admin: AdminPrincipal, container: ContainerDep
) -> JSONResponse:
    changes = UserChanges(
        email=body.email,
        role=Role(body.role) if body.role else None,
        status=UserStatus(body.status) if body.status else None,
        password=body.password,
        quota=body.quota.as_dict() if body.quota else None,
    )
    user = await container.users.update(user_id, changes)
    if changes.status is UserStatus.ACTIVE or changes.password is not None:
        await container.auth.guard.forgive(user.username)  # an admin lifts any lockout
    await container.audit.record("user.update", user=admin.user, target_type="user", target_id=user_id)
    return ok(user_json(user), "User updated")


@router.delete("/users/{user_id}", responses={200: {"model": EmptyEnvelope}})
async def delete_user(user_id: str, admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    await container.users.delete(user_id, admin.id)
    await container.audit.record("user.delete", user=admin.user, target_type="user", target_id=user_id)
    return ok(None, "User deleted")


@router.get("/roles", responses={200: {"model": Envelope[RoleList]}})
async def roles(_admin: AdminPrincipal) -> JSONResponse:
    return ok({
        "roles": [
            {"name": role.value, "permissions": sorted(perms)}
            for role, perms in ROLE_PERMISSIONS.items()
        ]
    })  # fmt: skip


@router.get("/permissions", responses={200: {"model": Envelope[PermissionList]}})
async def permissions(_admin: AdminPrincipal) -> JSONResponse:
    return ok({"permissions": [{"id": k, "description": v} for k, v in PERMISSIONS.items()]})
