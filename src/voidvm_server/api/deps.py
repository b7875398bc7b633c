"""FastAPI dependencies: the container, the authenticated principal, the request budget."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from voidvm_server.api.container import Container
from voidvm_server.auth.principal import Principal
from voidvm_server.errors import AuthError, ForbiddenError, TooManyRequestsError
from voidvm_server.services import context
from voidvm_server.services.ratelimit import client_key


async def get_container(request: Request) -> Container:  # async: no thread-pool hop per request
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def enforce_rate_limit(
    request: Request, container: Container, key: str, role: str, user_keys: tuple[str, ...] = ()
) -> None:
    """Spend one request of the caller's budget (bucket `key`); the headers go on the response
    either way. `user_keys` (id, username) find the caller's own entry in `per_user`."""
    limit_text = container.live.current.rate_limits.limit_for(role, user_keys)
    item = container.limiter.parse(limit_text)
    verdict = await container.limiter.hit(item, "api", key)
    request.scope.setdefault("state", {})["rate_headers"] = {
        "X-RateLimit-Limit": verdict.limit,
        "X-RateLimit-Remaining": verdict.remaining,
        "X-RateLimit-Reset": verdict.reset_after,
    }
    if not verdict.allowed:
        request.app.state.request_metrics.rate_limited.inc()
        raise TooManyRequestsError(
            f"Rate limit exceeded: {limit_text}; retry in {verdict.reset_after} s",
            retry_after=verdict.reset_after,
        )


def client_address(request: Request) -> str:
    """The client's address: the peer's, or a trusted proxy's X-Forwarded-For (see serving.py)."""
    return request.client.host if request.client else "unknown"


async def client_budget(request: Request, container: ContainerDep) -> None:
    """Before login: a budget per client address."""
    await enforce_rate_limit(request, container, f"ip:{client_key(client_address(request))}", "anonymous")


async def current_principal(request: Request, container: ContainerDep) -> Principal:
    token = bearer_token(request)
    if token is None:
        await client_budget(request, container)
        raise AuthError("Authentication required: send 'Authorization: Bearer <token>'")
    try:
        principal = await container.auth.authenticate(token)
    except AuthError:
        await client_budget(request, container)
        raise
    context.user_name.set(principal.user.username)
    request.state.principal = principal
    user = principal.user
    await enforce_rate_limit(request, container, f"user:{principal.id}", user.role.value,
                             (user.id, user.username))  # fmt: skip
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def admin_principal(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("Administrator access is required", details="system:admin")
    return principal


AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
