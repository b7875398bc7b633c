"""What a live-configuration change names must exist: the default image and per-user limits' users.

Checked when an admin changes the configuration, and only for what the change adds: an image
that failed or a user deleted since never blocks an unrelated change (nor a start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from voidvm_server.domain.models import ImageStatus
from voidvm_server.errors import ValidationError
from voidvm_server.persistence.repositories import ImageRepository, UserRepository
from voidvm_server.services.images import named_image

if TYPE_CHECKING:
    from voidvm_server.services.live_config import LiveConfig


async def check_references(session: AsyncSession, current: LiveConfig, candidate: LiveConfig) -> None:
    """Raise one VALIDATION_ERROR naming every new reference that matches nothing."""
    issues: list[tuple[str, str]] = []
    if candidate.default_image != current.default_image:
        reason = await _default_image_problem(session, candidate.default_image)
        if reason:
            issues.append(("default_image", reason))
    for key in candidate.rate_limits.per_user.keys() - current.rate_limits.per_user.keys():
        if not await _names_a_user(session, key):
            issues.append((f"rate_limits.per_user.{key}", "no user has this username or id"))
    if issues:
        raise ValidationError.many(issues)


async def _default_image_problem(session: AsyncSession, name: str) -> str | None:
    image = named_image(await ImageRepository(session).list(), name)
    if image is None:
        return "no image has this name or alias"
    if image.status is not ImageStatus.AVAILABLE:
        why = f": {image.status_reason}" if image.status_reason else ""
        return f"the image '{image.name}' is not available ({image.status.value}{why})"
    return None


async def _names_a_user(session: AsyncSession, key: str) -> bool:
    users = UserRepository(session)
    return await users.get(key) is not None or await users.by_username(key) is not None
