"""/auth: login, refresh, logout, me, password, personal API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from voidvm_server.api.deps import ContainerDep, CurrentPrincipal, client_address, client_budget
from voidvm_server.api.envelope import ok
from voidvm_server.api.presenters import token_json, user_json
from voidvm_server.api.response_models import (
    ERROR_RESPONSES,
    ApiTokenList,
    CreatedApiToken,
    EmptyEnvelope,
    Envelope,
    LoginEnvelope,
    UserPublic,
)
from voidvm_server.api.schemas import ApiTokenCreate, LoginRequest, PasswordChange, RefreshRequest
from voidvm_server.config import DEFAULT_ADMIN_PASSWORD
from voidvm_server.errors import TooManyRequestsError, VoidVMError
from voidvm_server.services.auth import LoginResult

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)


def _login_response(result: LoginResult, container: ContainerDep) -> JSONResponse:
    data = {
        "token": result.tokens.access,
        "token_type": "Bearer",
        "expires_in": result.tokens.expires_in,
        "refresh_token": result.tokens.refresh,
        "user": user_json(result.user),
    }
    # The seed's snippet does `const { token } = await response.json()`: token is also top-level.
    return ok(data, "Login successful", token=result.tokens.access)


@router.post("/login", dependencies=[Depends(client_budget)], responses={200: {"model": LoginEnvelope}})
async def login(body: LoginRequest, request: Request, container: ContainerDep) -> JSONResponse:
    try:
        result = await container.auth.login(body.username, body.password, client_address(request))
    except TooManyRequestsError:
        raise  # refused before any check: not an audit event, and an attacker could fill the log
    except VoidVMError as exc:
        await container.audit.record(
            "auth.login", user=None, username=body.username[:64], result="failure",
            message=exc.code, target_type="user",
        )  # fmt: skip
        raise
    await container.audit.record("auth.login", user=result.user, target_type="user", target_id=result.user.id)
    return _login_response(result, container)


@router.post("/refresh", dependencies=[Depends(client_budget)], responses={200: {"model": LoginEnvelope}})
async def refresh(body: RefreshRequest, container: ContainerDep) -> JSONResponse:
    return _login_response(await container.auth.refresh(body.refresh_token), container)


@router.post("/logout", responses={200: {"model": EmptyEnvelope}})
async def logout(principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    await container.auth.logout(principal)
    await container.audit.record("auth.logout", user=principal.user)
    return ok(None, "Logged out")


@router.get("/me", responses={200: {"model": Envelope[UserPublic]}})
async def me(principal: CurrentPrincipal) -> JSONResponse:
    return ok(user_json(principal.user))


@router.put("/password", responses={200: {"model": EmptyEnvelope}})
async def change_password(
    body: PasswordChange, request: Request, principal: CurrentPrincipal, container: ContainerDep
) -> JSONResponse:
    await container.auth.confirm_password(principal.user, body.current_password, client_address(request))
    await container.users.change_password(principal.user, body.current_password, body.new_password)
    if principal.user.username == "admin":  # its new password: no second argon2 run needed
        container.default_admin_password = body.new_password == DEFAULT_ADMIN_PASSWORD
    await container.audit.record("auth.password", user=principal.user, target_id=principal.id)
    return ok(None, "Password changed; sign in again")


@router.get("/tokens", responses={200: {"model": Envelope[ApiTokenList]}})
async def list_tokens(principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    tokens = await container.auth.list_api_tokens(principal.user)
    return ok({"tokens": [token_json(t) for t in tokens]})


@router.post("/tokens", status_code=201, responses={201: {"model": Envelope[CreatedApiToken]}})
async def create_token(
    body: ApiTokenCreate, principal: CurrentPrincipal, container: ContainerDep
) -> JSONResponse:
    record, token = await container.auth.create_api_token(principal.user, body.name, body.expires_in_days)
    await container.audit.record("auth.token.create", user=principal.user, target_id=record.id)
    return ok({**token_json(record), "token": token}, "Token created; it is shown only once", 201)


@router.delete("/tokens/{token_id}", responses={200: {"model": EmptyEnvelope}})
async def revoke_token(token_id: str, principal: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    await container.auth.revoke_api_token(principal.user, token_id)
    await container.audit.record("auth.token.revoke", user=principal.user, target_id=token_id)
    return ok(None, "Token revoked")
