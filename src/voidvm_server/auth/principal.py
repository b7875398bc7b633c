"""Who is making a request."""

from __future__ import annotations

from dataclasses import dataclass

from voidvm_server.auth.permissions import ROLE_PERMISSIONS
from voidvm_server.domain.models import User
from voidvm_server.errors import ForbiddenError


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: str | None  # None when authenticated by a personal API token
    api_token_id: str | None = None

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def require(self, permission: str) -> None:
        if permission not in ROLE_PERMISSIONS[self.user.role]:
            raise ForbiddenError("You do not have permission to do this", details=permission)
