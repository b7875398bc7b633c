"""Login, token refresh and logout, request authentication, personal API tokens."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from voidvm_server.auth.passwords import DUMMY_HASH, verify_password
from voidvm_server.auth.principal import Principal
from voidvm_server.auth.tokens import (
    API_TOKEN_PREFIX,
    IssuedTokens,
    TokenService,
    hash_api_token,
    new_api_token,
)
from voidvm_server.config import Settings
from voidvm_server.domain.models import ApiToken, User, UserStatus
from voidvm_server.errors import (
    AccountDisabledError,
    AuthError,
    NotFoundError,
    TooManyRequestsError,
    ValidationError,
)
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import TokenRepository, UserRepository
from voidvm_server.services.clock import now
from voidvm_server.services.ids import new_id
from voidvm_server.services.ratelimit import RateLimiter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoginResult:
    user: User
    tokens: IssuedTokens


def _invalid_credentials() -> AuthError:
    return AuthError("Invalid username or password", code="INVALID_CREDENTIALS")


class AuthService:
    def __init__(self, db: Database, tokens: TokenService, limiter: RateLimiter, settings: Settings) -> None:
        self.db = db
        self.tokens = tokens
        self.limiter = limiter
        self.settings = settings
        self._attempts = limiter.parse(f"{settings.login_attempts_per_minute}/minute")

    async def login(self, username: str, password: str, client_ip: str) -> LoginResult:
        # Every attempt spends the budget before the (costly) check, so a parallel burst cannot
        # slip past it; a successful login gives the budget back, so scripts that log in often
        # are not throttled.
        attempt_key = ("login", client_ip, username.lower())
        verdict = await self.limiter.hit(self._attempts, *attempt_key)
        if not verdict.allowed:
            raise TooManyRequestsError(
                "Too many failed login attempts; wait and try again",
                code="TOO_MANY_ATTEMPTS",
                retry_after=verdict.reset_after,
            )
        async with self.db.session() as s:
            user = await UserRepository(s).by_username(username)
        if user is None:
            await asyncio.to_thread(verify_password, DUMMY_HASH, password)  # same cost as a real check
            raise _invalid_credentials()
        stamp = now()
        if user.locked_until is not None and user.locked_until > stamp:
            raise AuthError(
                "The account is locked after repeated failed logins; try again later",
                code="ACCOUNT_LOCKED",
                details={"locked_until": user.locked_until.isoformat()},
            )
        # argon2 takes ~0.1 s of CPU: off the event loop, so QMP and sockets keep being served.
        if not await asyncio.to_thread(verify_password, user.password_hash, password):
            await self._record_failure(user)
            raise _invalid_credentials()
        await self.limiter.clear(self._attempts, *attempt_key)
        if user.status is UserStatus.DISABLED:
            raise AccountDisabledError()
        async with self.db.session() as s:
            await UserRepository(s).update(user.id, failed_logins=0, locked_until=None, last_login_at=stamp)
        return LoginResult(user, self.tokens.issue(user.id, user.token_version))

    async def _record_failure(self, user: User) -> None:
        async with self.db.session() as s:
            repo = UserRepository(s)
            failures = await repo.count_failed_login(user.id)  # atomic: parallel failures all count
            if failures >= self.settings.login_max_failures:
                locked_until = now() + timedelta(seconds=self.settings.login_lockout_seconds)
                await repo.update(user.id, failed_logins=0, locked_until=locked_until)
                log.warning("Account %s locked after %d failed logins", user.username, failures)

    async def refresh(self, refresh_token: str) -> LoginResult:
        claims = self.tokens.decode(refresh_token, kind="refresh")
        user = await self._live_user(claims.user_id, claims.session_id, claims.token_version)
        async with self.db.session() as s:
            await TokenRepository(s).revoke_session(claims.session_id, claims.expires_at)
        return LoginResult(user, self.tokens.issue(user.id, user.token_version))

    async def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            return  # API tokens are revoked through /auth/tokens
        expires = now() + timedelta(seconds=self.settings.refresh_token_ttl_seconds)
        async with self.db.session() as s:
            await TokenRepository(s).revoke_session(principal.session_id, expires)

    async def authenticate(self, token: str) -> Principal:
        if token.startswith(API_TOKEN_PREFIX):
            return await self._authenticate_api_token(token)
        claims = self.tokens.decode(token, kind="access")
        user = await self._live_user(claims.user_id, claims.session_id, claims.token_version)
        return Principal(user=user, session_id=claims.session_id)

    async def _live_user(self, user_id: str, session_id: str, token_version: int) -> User:
        async with self.db.reading() as s:
            user, revoked = await UserRepository(s).get_with_session(user_id, session_id)
        if user is None or revoked or user.token_version != token_version:
            raise AuthError("The token is no longer valid", code="INVALID_TOKEN")
        if user.status is UserStatus.DISABLED:
            raise AccountDisabledError()
        return user

    async def _authenticate_api_token(self, token: str) -> Principal:
        async with self.db.reading() as s:
            stored = await TokenRepository(s).by_hash(hash_api_token(token))
            user = await UserRepository(s).get(stored.user_id) if stored else None
        stamp = now()
        if stored is None or user is None:
            raise AuthError("The token is invalid", code="INVALID_TOKEN")
        if stored.expires_at is not None and stored.expires_at < stamp:
            raise AuthError("The token has expired", code="TOKEN_EXPIRED")
        if user.status is UserStatus.DISABLED:
            raise AccountDisabledError()
        if stored.last_used_at is None or stamp - stored.last_used_at > timedelta(minutes=1):
            async with self.db.session() as s:
                await TokenRepository(s).touch(stored.id, stamp)
        return Principal(user=user, session_id=None, api_token_id=stored.id)

    async def create_api_token(
        self, user: User, name: str, expires_in_days: int | None
    ) -> tuple[ApiToken, str]:
        if not name.strip() or len(name) > 100:
            raise ValidationError("name", "1-100 characters")
        token, prefix, digest = new_api_token()
        stamp = now()
        record = ApiToken(
            id=new_id("tok"),
            user_id=user.id,
            name=name,
            prefix=prefix,
            token_hash=digest,
            created_at=stamp,
            expires_at=stamp + timedelta(days=expires_in_days) if expires_in_days else None,
            last_used_at=None,
        )
        async with self.db.session() as s:
            await TokenRepository(s).add(record)
        return record, token

    async def list_api_tokens(self, user: User) -> list[ApiToken]:
        async with self.db.reading() as s:
            return await TokenRepository(s).for_user(user.id)

    async def revoke_api_token(self, user: User, token_id: str) -> None:
        async with self.db.session() as s:
            if not await TokenRepository(s).delete(user.id, token_id):
                raise NotFoundError("API token not found", code="TOKEN_NOT_FOUND")
