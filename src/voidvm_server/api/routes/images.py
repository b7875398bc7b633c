"""/images: the image store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from voidvm_server.api.deps import AdminPrincipal, ContainerDep, CurrentPrincipal
from voidvm_server.api.envelope import ok
from voidvm_server.api.presenters import image_json, operation_json
from voidvm_server.api.response_models import (
    ERROR_RESPONSES,
    AcceptedEnvelope,
    EmptyEnvelope,
    Envelope,
    ImageList,
    ImagePublic,
)
from voidvm_server.api.routes.operations import operation_location
from voidvm_server.api.schemas import ImageImport
from voidvm_server.domain.models import ImageFormat
from voidvm_server.errors import ConflictError, ValidationError
from voidvm_server.services.images import ImageSource

router = APIRouter(prefix="/images", tags=["images"], responses=ERROR_RESPONSES)
UPLOAD_PATH = "/api/v1/images/upload"


@router.get("", responses={200: {"model": Envelope[ImageList]}})
async def list_images(_p: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    return ok({"images": [image_json(i) for i in await container.images.list()]})


@router.get("/{image_id}", responses={200: {"model": Envelope[ImagePublic]}})
async def get_image(image_id: str, _p: CurrentPrincipal, container: ContainerDep) -> JSONResponse:
    return ok(image_json(await container.images.get(image_id)))


@router.post(
    "",
    status_code=201,
    responses={
        201: {"model": Envelope[ImagePublic]},
        202: {
            "model": AcceptedEnvelope[ImagePublic],
            "description": "A URL import with `wait: false`: the image (`downloading`) and its operation",
        },
    },
)
async def import_image(body: ImageImport, admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    if (body.url is None) == (body.path is None):
        raise ValidationError("url", "give exactly one of 'url' or 'path' (or use /images/upload)")
    if not body.wait and (body.path is not None or body.default):
        field = "default" if body.path is None else "wait"
        raise ValidationError(field, "'wait: false' is for URL imports that do not set the default image")
    fmt = ImageFormat(body.format)
    if body.url is not None:
        image, operation, done = await container.images.import_from_url(
            body.name, fmt, body.url, body.aliases, owner_id=admin.id
        )
        await container.audit.record("image.import", user=admin.user, target_type="image",
                                     target_id=image.id, message=f"from a URL ({operation.id})")  # fmt: skip
        if not body.wait:
            answer = ok(image_json(image), "Image import accepted", 202, operation=operation_json(operation))
            answer.headers.update(operation_location(operation))
            return answer
        try:
            await asyncio.shield(done)  # its error, if any, is this answer's; a disconnect leaves it running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if done.cancelled() and not (current and current.cancelling()):  # cancelled by DELETE
                raise ConflictError("The import was cancelled", code="OPERATION_CANCELLED") from None
            raise
        image = await container.images.get(image.id)
    else:
        image = await container.images.import_image(body.name, fmt, ImageSource(path=body.path), body.aliases)
        await container.audit.record("image.import", user=admin.user, target_type="image",
                                     target_id=image.id)  # fmt: skip
    if body.default:
        image = await container.images.set_default(image.id)
    return ok(image_json(image), "Image imported", 201)


@router.post("/upload", status_code=201, responses={201: {"model": Envelope[ImagePublic]}})
async def upload_image(
    request: Request, admin: AdminPrincipal, container: ContainerDep, name: str, format: str
) -> JSONResponse:
    """Stream the raw image bytes as the request body (`?name=...&format=qcow2|raw|iso`)."""
    if format not in {"qcow2", "raw", "iso"}:
        raise ValidationError("format", "must be qcow2, raw or iso")

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    image = await container.images.import_image(name, ImageFormat(format), ImageSource(upload=chunks()), [])
    await container.audit.record("image.upload", user=admin.user, target_type="image",
                                 target_id=image.id)  # fmt: skip
    return ok(image_json(image), "Image uploaded", 201)


@router.delete("/{image_id}", responses={200: {"model": EmptyEnvelope}})
async def delete_image(image_id: str, admin: AdminPrincipal, container: ContainerDep) -> JSONResponse:
    await container.images.delete(image_id)
    await container.audit.record("image.delete", user=admin.user, target_type="image",
                                 target_id=image_id)  # fmt: skip
    return ok(None, "Image deleted")
