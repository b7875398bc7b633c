"""JWT access and refresh tokens, and personal API tokens.

Access and refresh tokens of one login share a session id (`sid`); logging out revokes the session.
The algorithm is pinned; `exp`, `iat`, `iss` and `aud` are required and checked.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from voidvm_server.errors import AuthError

ALGORITHM = "HS256"
API_TOKEN_PREFIX = "vvm_"
LEEWAY_SECONDS = 5
VERIFIED_KEPT = 4096  # tokens whose signature and claims were checked, kept per process


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    session_id: str
    token_version: int
    kind: str  # "access" or "refresh"
    expires_at: datetime


@dataclass(frozen=True)
class IssuedTokens:
    access: str
    refresh: str
    expires_in: int
    session_id: str


class TokenService:
    def __init__(self, secret: str, *, issuer: str, audience: str, access_ttl: int, refresh_ttl: int) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        # A token's signature and fixed claims never change: checked once (60-90 µs of PyJWT),
        # then only its expiry, which moves with the clock, is checked again at every use.
        self._verified: OrderedDict[tuple[str, str], TokenClaims] = OrderedDict()

    def issue(self, user_id: str, token_version: int) -> IssuedTokens:
        session_id = uuid.uuid4().hex
        return IssuedTokens(
            access=self._encode(user_id, session_id, token_version, "access", self.access_ttl),
            refresh=self._encode(user_id, session_id, token_version, "refresh", self.refresh_ttl),
            expires_in=self.access_ttl,
            session_id=session_id,
        )

    def _encode(self, user_id: str, sid: str, version: int, kind: str, ttl: int) -> str:
        now = datetime.now(UTC)
        payload: dict[str, Any] = {
            "sub": user_id,
            "sid": sid,
            "ver": version,
            "typ": kind,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str, *, kind: str = "access") -> TokenClaims:
        known = self._verified.get((token, kind))
        if known is not None:
            if known.expires_at.timestamp() <= time.time() - LEEWAY_SECONDS:  # as PyJWT decides
                raise AuthError("The token has expired", code="TOKEN_EXPIRED")
            self._verified.move_to_end((token, kind))
            return known
        claims = self._decode(token, kind)
        self._verified[(token, kind)] = claims
        if len(self._verified) > VERIFIED_KEPT:
            self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str, kind: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "sid"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("The token has expired", code="TOKEN_EXPIRED") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("The token is invalid", code="INVALID_TOKEN") from exc
        if payload.get("typ") != kind:
            raise AuthError("The token is invalid", code="INVALID_TOKEN")
        return TokenClaims(
            user_id=str(payload["sub"]),
            session_id=str(payload["sid"]),
            token_version=int(payload.get("ver", 0)),
            kind=kind,
            expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
        )


def new_api_token() -> tuple[str, str, str]:
    """Return (the token shown once, its display prefix, its SHA-256 hash for storage)."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token[:12], hash_api_token(token)


def hash_api_token(token: str) -> str:
    # The token has 256 bits of entropy, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def load_or_create_secret(data_dir: Path) -> str:
    """The JWT signing secret kept in the data directory, created once with mode 0600."""
    path = data_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    tmp.replace(path)
    return secret
