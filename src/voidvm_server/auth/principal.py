"""Who is making a request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from voidvm_server.auth.permissions import ROLE_PERMISSIONS
from voidvm_server.domain.models import User
from voidvm_server.errors import ForbiddenError


@dataclass(frozen=True)
class Grant:
    """What a principal's credential stood for, without the credential itself: enough to check
    later (`AuthService.revalidate`) that it still holds. Open sockets and console tickets keep
    this, never the bearer token."""

    user_id: str
    token_version: int  # the user's version when the credential was checked
    session_id: str | None  # a login's session; None for a personal API token
    api_token_id: str | None
    expires_at: datetime | None  # when the credential itself expires (None: never)


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: str | None  # None when authenticated by a personal API token
    api_token_id: str | None = None
    expires_at: datetime | None = None  # the credential's own expiry

    @property
    def grant(self) -> Grant:
        return Grant(self.user.id, self.user.token_version, self.session_id, self.api_token_id,
                     self.expires_at)  # fmt: skip

    @property
    def id(self) -> str:
        return self.user.id

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def require(self, permission: str) -> None:
        if permission not in ROLE_PERMISSIONS[self.user.role]:
            raise ForbiddenError("You do not have permission to do this", details=permission)
