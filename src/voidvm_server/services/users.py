"""Users: create, list, update, disable, delete; the first-start admin account."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from voidvm_server.auth.passwords import PasswordHashing
from voidvm_server.config import DEFAULT_ADMIN_PASSWORD, Settings
from voidvm_server.domain.models import Quota, Role, Usage, User, UserStatus
from voidvm_server.errors import ConflictError, NotFoundError, ValidationError
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import TokenRepository, UserRepository, VMRepository
from voidvm_server.services.clock import now
from voidvm_server.services.ids import new_id
from voidvm_server.services.live_config import LiveConfigStore

log = logging.getLogger(__name__)
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD = 8


@dataclass
class UserChanges:
    email: str | None = None
    role: Role | None = None
    status: UserStatus | None = None
    password: str | None = None
    quota: dict[str, int] | None = None


def user_not_found(user_id: str) -> NotFoundError:
    return NotFoundError(
        "User not found", code="USER_NOT_FOUND", details=f"User with ID '{user_id}' was not found"
    )


def check_password_strength(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(field, f"must be at least {MIN_PASSWORD} characters")
    if len(password) > 256:
        raise ValidationError(field, "must be at most 256 characters")


class UserService:
    def __init__(
        self, db: Database, settings: Settings, live: LiveConfigStore, hashing: PasswordHashing
    ) -> None:
        self.db = db
        self.settings = settings
        self.live = live
        self.hashing = hashing

    def default_quota(self) -> Quota:
        return Quota(**self.live.current.default_quota.model_dump())

    async def create(
        self,
        username: str,
        password: str,
        *,
        email: str | None = None,
        role: Role = Role.USER,
        quota: dict[str, int] | None = None,
        check_strength: bool = True,
    ) -> User:
        if not USERNAME.match(username):
            raise ValidationError("username", "3-64 letters, digits, '.', '_' or '-'")
        if check_strength:
            check_password_strength(password)
        base = self.default_quota()
        if role is Role.ADMIN:
            base = Quota(1000, 10_000, 10_000_000, 1_000_000)
        merged = Quota(**{**base.__dict__, **(quota or {})})
        password_hash = await self.hashing.hash(password)
        stamp = now()
        user = User(
            id=new_id("usr"),
            username=username,
            email=email,
            password_hash=password_hash,
            role=role,
            status=UserStatus.ACTIVE,
            quota=merged,
            usage=Usage(),
            token_version=0,
            failed_logins=0,
            locked_until=None,
            created_at=stamp,
            updated_at=stamp,
            last_login_at=None,
        )
        async with self.db.session() as s:
            await UserRepository(s).add(user)
        return user

    async def get(self, user_id: str) -> User:
        async with self.db.reading() as s:
            user = await UserRepository(s).get(user_id)
        if user is None:
            raise user_not_found(user_id)
        return user

    async def by_username(self, username: str) -> User:
        async with self.db.reading() as s:
            user = await UserRepository(s).by_username(username)
        if user is None:
            raise user_not_found(username)
        return user

    async def list(self, page: int, limit: int) -> tuple[list[User], int]:
        async with self.db.reading() as s:
            return await UserRepository(s).list((page - 1) * limit, limit)

    async def update(self, user_id: str, changes: UserChanges) -> User:
        values: dict[str, object] = {}
        if changes.email is not None:
            values["email"] = changes.email
        if changes.role is not None:
            values["role"] = changes.role.value
        if changes.status is not None:
            values["status"] = changes.status.value
        if changes.password is not None:
            check_password_strength(changes.password)
            values["password_hash"] = await self.hashing.hash(changes.password)
        if changes.quota:
            values.update({k: v for k, v in changes.quota.items()})
        async with self.db.session() as s:
            repo = UserRepository(s)
            user = await repo.get(user_id)
            if user is None:
                raise user_not_found(user_id)
            if changes.password is not None or changes.status is UserStatus.DISABLED:
                values["token_version"] = user.token_version + 1  # ends every session
            if changes.password is not None:
                await TokenRepository(s).delete_for_user(user_id)  # and every API token
            values["updated_at"] = now()
            await repo.update(user_id, **values)
        return await self.get(user_id)

    async def change_password(self, user: User, current: str, new: str) -> None:
        """Set a new password; the caller has confirmed `current` (AuthService.confirm_password,
        which counts wrong guesses like failed logins)."""
        check_password_strength(new, "new_password")
        if new == current:
            raise ValidationError("new_password", "must differ from the current password")
        new_hash = await self.hashing.hash(new)
        async with self.db.session() as s:
            await UserRepository(s).update(
                user.id, password_hash=new_hash, token_version=user.token_version + 1, updated_at=now()
            )
            await TokenRepository(s).delete_for_user(user.id)  # API tokens end with the password

    async def delete(self, user_id: str, acting_user_id: str) -> None:
        if user_id == acting_user_id:
            raise ConflictError("You cannot delete your own account", code="INVALID_STATE")
        async with self.db.session() as s:
            repo = UserRepository(s)
            if await repo.get(user_id) is None:
                raise user_not_found(user_id)
            owned, _ = await VMRepository(s).list(
                owner_id=user_id, status=None, search=None, sort=[], offset=0, limit=1
            )
            if owned:
                raise ConflictError("Delete the user's VMs first", code="INVALID_STATE")
            await repo.delete(user_id)

    async def ensure_admin(self) -> User:
        """First start: create `admin` with the configured password, or the seed's `admin123`."""
        async with self.db.session() as s:
            existing = await UserRepository(s).by_username("admin")
        if existing is not None:
            return existing
        configured = self.settings.admin_password
        password = configured.get_secret_value() if configured else DEFAULT_ADMIN_PASSWORD
        log.info("Creating the initial 'admin' account")
        return await self.create("admin", password, role=Role.ADMIN, check_strength=False)

    async def admin_uses_default_password(self) -> bool:
        async with self.db.reading() as s:
            admin = await UserRepository(s).by_username("admin")
        return admin is not None and await self.hashing.verify(admin.password_hash, DEFAULT_ADMIN_PASSWORD)
