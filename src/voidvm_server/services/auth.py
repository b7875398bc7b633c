"""Login, token refresh and logout, request authentication, personal API tokens."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from voidvm_server.auth.passwords import DUMMY_HASH, PasswordHashing
from voidvm_server.auth.principal import Grant, Principal
from voidvm_server.auth.tokens import (
    API_TOKEN_PREFIX,
    IssuedTokens,
    TokenService,
    hash_api_token,
    new_api_token,
)
from voidvm_server.config import Settings
from voidvm_server.domain.models import ApiToken, User, UserStatus
from voidvm_server.errors import AccountDisabledError, AuthError, NotFoundError, ValidationError
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import TokenRepository, UserRepository
from voidvm_server.services.clock import now
from voidvm_server.services.ids import new_id
from voidvm_server.services.login_guard import LoginGuard

log = logging.getLogger(__name__)
REVOKED_PURGE_INTERVAL_SECONDS = 3600


@dataclass(frozen=True)
class LoginResult:
    user: User
    tokens: IssuedTokens


def _invalid_credentials() -> AuthError:
    return AuthError("Invalid username or password", code="INVALID_CREDENTIALS")


class AuthService:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        guard: LoginGuard,
        hashing: PasswordHashing,
        settings: Settings,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.guard = guard
        self.hashing = hashing
        self.settings = settings
        self._purger: asyncio.Task[None] | None = None

    async def login(self, username: str, password: str, client_ip: str) -> LoginResult:
        async with self.db.reading() as s:
            user = await UserRepository(s).by_username(username)
        await self.check_password(user, username, password, client_ip)
        assert user is not None
        if user.status is UserStatus.DISABLED:
            raise AccountDisabledError()
        async with self.db.session() as s:
            await UserRepository(s).update(user.id, last_login_at=now())
        return LoginResult(user, self.tokens.issue(user.id, user.token_version))

    async def check_password(self, user: User | None, username: str, password: str, client_ip: str) -> None:
        """Check a password under the login guard; `user` None (no such account) costs the same
        and is answered the same as a wrong password."""
        claim = await self.guard.claim(username, client_ip)
        try:
            right = await self.hashing.verify(user.password_hash if user else DUMMY_HASH, password)
        except BaseException:  # not checked (the pool was full, the request was cancelled)
            await self.guard.succeeded(claim)
            raise
        if user is None or not right:
            raise _invalid_credentials()
        await self.guard.succeeded(claim)

    async def confirm_password(self, user: User, password: str, client_ip: str) -> None:
        """A signed-in user proving they know their password (to change it): guesses count
        exactly like failed logins."""
        try:
            await self.check_password(user, user.username, password, client_ip)
        except AuthError:
            raise ValidationError("current_password", "is not your current password") from None

    async def refresh(self, refresh_token: str) -> LoginResult:
        """A refresh token is single-use: of parallel refreshes with one token exactly one wins
        (the first to record its session as used); the others get 401."""
        claims = self.tokens.decode(refresh_token, kind="refresh")
        user = await self._live_user(claims.user_id, claims.session_id, claims.token_version)
        async with self.db.session() as s:
            first = await TokenRepository(s).revoke_session(claims.session_id, claims.expires_at)
        if not first:
            raise AuthError("The refresh token was already used", code="INVALID_TOKEN")
        return LoginResult(user, self.tokens.issue(user.id, user.token_version))

    # -- revoked sessions are kept until their tokens would have expired anyway -----------------
    def start(self) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge_revoked_sessions())

    async def stop(self) -> None:
        purger, self._purger = self._purger, None
        if purger is not None:
            purger.cancel()
            await asyncio.gather(purger, return_exceptions=True)
        self.hashing.close()  # shared with UserService: the server stops with both

    async def purge_revoked(self) -> int:
        async with self.db.session() as s:
            return await TokenRepository(s).purge_revoked(now())

    async def _purge_revoked_sessions(self) -> None:
        while True:
            try:
                purged = await self.purge_revoked()
                if purged:
                    log.info("Purged %d expired revoked sessions", purged)
            except Exception:
                log.exception("Purging expired revoked sessions failed")
            await asyncio.sleep(REVOKED_PURGE_INTERVAL_SECONDS)

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
        return Principal(user=user, session_id=claims.session_id, expires_at=claims.expires_at)

    async def revalidate(self, grant: Grant) -> Principal:
        """The principal a credential checked earlier stands for now, or the AuthError it would
        get today (expired, revoked, logged out, password changed, user disabled)."""
        if grant.expires_at is not None and grant.expires_at < now():
            raise AuthError("The token has expired", code="TOKEN_EXPIRED")
        if grant.api_token_id is not None:
            async with self.db.reading() as s:
                stored = await TokenRepository(s).get(grant.api_token_id)
                user = await UserRepository(s).get(grant.user_id) if stored else None
            if stored is None or user is None or stored.user_id != grant.user_id:
                raise AuthError("The token is invalid", code="INVALID_TOKEN")
            if user.status is UserStatus.DISABLED:
                raise AccountDisabledError()
            return Principal(user=user, session_id=None, api_token_id=stored.id, expires_at=stored.expires_at)
        if grant.session_id is None:
            raise AuthError("The token is invalid", code="INVALID_TOKEN")
        user = await self._live_user(grant.user_id, grant.session_id, grant.token_version)
        return Principal(user=user, session_id=grant.session_id, expires_at=grant.expires_at)

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
        return Principal(user=user, session_id=None, api_token_id=stored.id, expires_at=stored.expires_at)

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
