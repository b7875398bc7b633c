"""The image store: list, import (server path, upload, URL), delete, and resolve a VM's `os`.

Every image lives in `<data>/images/<image-id>/` under file names VoidVM chooses.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voidvm_server.agent.port import ImageRef
from voidvm_server.config import Settings
from voidvm_server.domain.models import Image, ImageFormat, ImageStatus
from voidvm_server.domain.operations import Operation
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
    VoidVMError,
)
from voidvm_server.persistence.engine import Database
from voidvm_server.persistence.repositories import ImageRepository
from voidvm_server.services import catalog
from voidvm_server.services.clock import now
from voidvm_server.services.fetch import download, fetch_text
from voidvm_server.services.ids import is_valid_id, new_id
from voidvm_server.services.operations import OperationService, Progress

log = logging.getLogger(__name__)
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DISK_FILE = {
    ImageFormat.QCOW2: "disk.qcow2",
    ImageFormat.RAW: "disk.raw",
    ImageFormat.ISO: "cd.iso",
}


@dataclass(frozen=True)
class ImageSource:
    """Where an import comes from: exactly one of these is set."""

    url: str | None = None
    path: str | None = None  # relative to the configured import directory
    upload: AsyncIterator[bytes] | None = None


def image_not_found(ref: str) -> NotFoundError:
    return NotFoundError("Image not found", code="IMAGE_NOT_FOUND", details=f"Image '{ref}' was not found")


def image_not_available(image: Image) -> ConflictError:
    why = f": {image.status_reason}" if image.status_reason else ""
    return ConflictError(
        f"The image '{image.name}' is not available ({image.status.value}{why})",
        code="IMAGE_NOT_AVAILABLE",
        details={"image": image.name, "image_status": image.status.value, "reason": image.status_reason},
    )


def named_image(images: builtins.list[Image], name: str) -> Image | None:
    """The image called `name`, by its name or one of its aliases (case-insensitive)."""
    key = name.lower()
    return next((i for i in images if key == i.name.lower() or key in (a.lower() for a in i.aliases)), None)


def is_catalog_pull(image: Image) -> bool:
    """Whether `image` came (or is coming) from the OS catalog, not from a URL import."""
    entry = catalog.find(image.name.lower())
    return entry is not None and image.source == entry.url


def refuse_kernel_imports(fmt: ImageFormat) -> None:
    if fmt is ImageFormat.KERNEL:
        raise ValidationError(
            "format",
            "kernel images cannot be imported: the built-in one is made by "
            "'voidvm-server image build-tiny'; import a qcow2, raw or iso disk",
        )


def pull_failure(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the pull was cancelled or cut short"
    return exc.message if isinstance(exc, VoidVMError) else f"download failed: {exc}"


def progress_of(progress: Progress) -> Callable[[int, int | None], Awaitable[None]]:
    """A download's byte counts as its operation's percent (99 at most: 100 once it is saved)."""

    async def report(written: int, expected: int | None) -> None:
        percent = min(99, written * 100 // expected) if expected else None
        await progress.report(percent, f"{written / 1024**2:.1f} MiB downloaded")

    return report


class ImageService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        qemu_img: QemuImg,
        default_image: Callable[[], str] | None = None,
        operations: OperationService | None = None,
    ) -> None:
        self.operations = operations  # pulls and URL imports run as operations (not needed otherwise)
        self.db = db
        self.settings = settings
        self.qemu_img = qemu_img
        # The live `default_image` setting (PUT /config); the image flagged default backs it up.
        self._default_image = default_image or (lambda: settings.default_image)
        self.root = settings.data_dir / "images"
        self.root.mkdir(parents=True, exist_ok=True)
        self.import_dir = settings.data_dir / "import"
        self._ready: dict[str, asyncio.Event] = {}

    def image_dir(self, image_id: str) -> Path:
        if not is_valid_id(image_id):
            raise ValueError("invalid image id")
        return self.root / image_id

    def media(self, image: Image) -> ImageRef:
        """What a VM of this image boots, as the host agent finds it in the image store."""
        return ImageRef(image.id, image.format.value, dict(image.files), image.kernel_cmdline)

    async def list(self) -> list[Image]:
        async with self.db.reading() as s:
            return await ImageRepository(s).list()

    async def get(self, ref: str) -> Image:
        async with self.db.reading() as s:
            repo = ImageRepository(s)
            image = await repo.get(ref) or await repo.by_name(ref)
        if image is None:
            raise image_not_found(ref)
        return image

    async def get_available(self, ref: str) -> Image:
        """The image, which must be `available`: one still downloading or failed has no files."""
        image = await self.get(ref)
        if image.status is not ImageStatus.AVAILABLE:
            raise image_not_available(image)
        return image

    async def resolve(self, os_name: str | None, *, requested_by: str) -> Image:
        """The image a VM's `os` names (name or alias), the default one, or a catalog pull (an
        operation of the user `requested_by`)."""
        images = await self.list()
        if os_name is None or os_name == "":
            flagged = next((i for i in images if i.is_default), None)
            chosen = named_image(images, self._default_image()) or flagged
            if chosen is None:
                raise ValidationError("os", "no default image is installed; run 'make run' or "
                                      "'voidvm-server image build-tiny'")  # fmt: skip
            return chosen
        named = named_image(images, os_name)
        if named is not None:
            if named.status is ImageStatus.DOWNLOADING and not is_catalog_pull(named):
                raise image_not_available(named)  # a URL import: it may still fail and vanish
            return named
        key = os_name.lower()
        entry = catalog.find(key)
        if entry is None:
            known = sorted({i.name for i in images} | {c.name for c in catalog.CATALOG})
            raise ValidationError("os", f"unknown image; available: {', '.join(known)}")
        return await self._pull_catalog(entry, requested_by)

    def _operations(self) -> OperationService:
        if self.operations is None:
            raise RuntimeError("this image store was built without operations")
        return self.operations

    async def _pull_catalog(self, entry: catalog.CatalogImage, owner_id: str) -> Image:
        image = self._new_record(entry.name, ImageFormat(entry.format), entry.url)
        image.aliases = list(entry.aliases)
        image.status = ImageStatus.DOWNLOADING
        try:
            async with self.db.session() as s:
                await ImageRepository(s).add(image)
        except ConflictError:  # another request started the same pull first
            return await self.get(entry.name)

        async def pull(progress: Progress) -> dict[str, Any]:
            await self._download_catalog(image, entry, progress)
            return {"image_id": image.id}

        # Not cancellable: other users' VMs may be waiting on the same pull.
        await self._operations().start(
            "image.pull", pull, resource_type="image", resource_id=image.id, owner_id=owner_id,
            message=f"pulling {entry.name}",
        )  # fmt: skip
        return image

    async def _download_catalog(self, image: Image, entry: catalog.CatalogImage, progress: Progress) -> None:
        directory = self.image_dir(image.id)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / DISK_FILE[image.format]
        try:
            if not self.settings.image_downloads:
                raise ValidationError("os", "image downloads are disabled on this server")
            sums = await fetch_text(entry.sums_url)
            expected = catalog.expected_checksum(sums, entry.file_name)
            if expected is None:
                raise ValidationError("os", "the publisher's checksum file does not list the image")
            algorithm = "sha512" if len(expected) == 128 else "sha256"
            digest = await download(
                entry.url, target, max_bytes=self.settings.max_upload_bytes, algorithm=algorithm,
                on_progress=progress_of(progress),
            )  # fmt: skip
            if digest != expected:
                raise ValidationError("os", "the downloaded image does not match its checksum")
            await self._finish(image, target)
        except BaseException as exc:  # any failure becomes the image's status, not a crash
            reason = pull_failure(exc)
            log.warning("Pulling image %s failed: %s", entry.name, reason)
            await asyncio.shield(self._mark_failed(image.id, directory, reason))
            if isinstance(exc, VoidVMError | asyncio.CancelledError):
                raise
            raise VoidVMError(reason, code="IMAGE_PULL_FAILED") from exc
        finally:
            self._ready.setdefault(image.id, asyncio.Event()).set()

    async def _mark_failed(self, image_id: str, directory: Path, reason: str) -> None:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        async with self.db.session() as s:
            await ImageRepository(s).update(image_id, status=ImageStatus.ERROR.value, status_reason=reason)

    async def wait_ready(self, image_id: str) -> Image:
        """Wait for a pull to finish; the image comes back `available` or `error`. The row is
        read again every second too: another API worker may be the one pulling it."""
        image = await self.get(image_id)
        while image.status is ImageStatus.DOWNLOADING:
            event = self._ready.setdefault(image_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), 1.0)
            image = await self.get(image_id)
        return image

    def _new_record(self, name: str, fmt: ImageFormat, source: str) -> Image:
        if not IMAGE_NAME.match(name):
            raise ValidationError("name", "1-64 letters, digits, '.', '_' or '-'")
        return Image(
            id=new_id("img"),
            name=name,
            aliases=[],
            format=fmt,
            status=ImageStatus.AVAILABLE,
            status_reason=None,
            size_bytes=0,
            virtual_size_bytes=0,
            is_default=False,
            source=source,
            created_at=now(),
        )

    async def _finish(self, image: Image, disk: Path) -> None:
        info = await self.qemu_img.inspect(disk, image.format.value)
        async with self.db.session() as s:
            await ImageRepository(s).update(
                image.id,
                status=ImageStatus.AVAILABLE.value,
                status_reason=None,
                size_bytes=disk.stat().st_size,
                virtual_size_bytes=info.virtual_size,
                files={"disk": disk.name},
            )

    async def import_image(
        self, name: str, fmt: ImageFormat, source: ImageSource, aliases: builtins.list[str]
    ) -> Image:
        refuse_kernel_imports(fmt)
        image = self._new_record(name, fmt, "upload" if source.upload else "file")
        image.aliases = [a for a in aliases if IMAGE_NAME.match(a)]
        directory = self.image_dir(image.id)
        directory.mkdir(parents=True)
        target = directory / DISK_FILE[fmt]
        try:
            if source.path is not None:
                await asyncio.to_thread(shutil.copyfile, self._import_path(source.path), target)
            elif source.upload is not None:
                await self._save_upload(source.upload, target)
            else:
                raise ValidationError("url", "give a path or a file (URLs: import_from_url)")
            info = await self.qemu_img.inspect(target, fmt.value)
            image.size_bytes = target.stat().st_size
            image.virtual_size_bytes = info.virtual_size
            image.files = {"disk": target.name}
            async with self.db.session() as s:
                await ImageRepository(s).add(image)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise
        return image

    async def import_from_url(
        self, name: str, fmt: ImageFormat, url: str, aliases: builtins.list[str], *, owner_id: str
    ) -> tuple[Image, Operation, asyncio.Task[Any]]:
        """Begin downloading `url` as a new image (`downloading`, as an `image.import` operation);
        the image, its operation, and the task to await for the outcome. A failed or cancelled
        import leaves no image behind."""
        refuse_kernel_imports(fmt)
        if not self.settings.image_url_imports:
            raise ValidationError("url", "URL imports are disabled on this server")
        image = self._new_record(name, fmt, url)
        image.aliases = [a for a in aliases if IMAGE_NAME.match(a)]
        image.status = ImageStatus.DOWNLOADING
        async with self.db.session() as s:
            await ImageRepository(s).add(image)  # a name conflict answers here, before any download

        async def fetch(progress: Progress) -> dict[str, Any]:
            directory = self.image_dir(image.id)
            try:
                directory.mkdir(parents=True)
                target = directory / DISK_FILE[fmt]
                await download(
                    url, target, max_bytes=self.settings.max_upload_bytes,
                    allow_private=self.settings.image_allow_private_urls, on_progress=progress_of(progress),
                )  # fmt: skip
                await self._finish(image, target)
            except BaseException:
                await asyncio.shield(self._forget(image.id, directory))
                raise
            finally:
                self._ready.setdefault(image.id, asyncio.Event()).set()
            return {"image_id": image.id}

        op, task = await self._operations().start(
            "image.import", fetch, resource_type="image", resource_id=image.id, owner_id=owner_id,
            cancellable=True, message=f"importing {name}",
        )  # fmt: skip
        return image, op, task

    async def _forget(self, image_id: str, directory: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        async with self.db.session() as s:
            await ImageRepository(s).delete(image_id)

    def _import_path(self, relative: str) -> Path:
        """Only files inside the import directory: no user-supplied host path is opened."""
        refusal = ValidationError("path", "must name a file inside the server's image import directory")
        if "\x00" in relative:
            raise refusal
        base = self.import_dir.resolve()
        try:
            candidate = (base / relative).resolve()
            if not candidate.is_relative_to(base) or not candidate.is_file():
                raise refusal
        except (OSError, ValueError):  # a loop of links, a name too long
            raise refusal from None
        return candidate

    async def _save_upload(self, chunks: AsyncIterator[bytes], target: Path) -> None:
        written = 0
        with target.open("wb") as handle:
            async for chunk in chunks:
                written += len(chunk)
                if written > self.settings.max_upload_bytes:
                    raise ValidationError("file", "the upload is larger than the allowed size")
                await asyncio.to_thread(handle.write, chunk)

    async def register_kernel_image(
        self, name: str, kernel: Path, initrd: Path | None, cmdline: str, *, default: bool
    ) -> Image:
        """Copy a kernel (+ initrd) pair into the store; used by `image build-tiny`."""
        image = self._new_record(name, ImageFormat.KERNEL, "built-in")
        directory = self.image_dir(image.id)
        directory.mkdir(parents=True)
        shutil.copyfile(kernel, directory / "vmlinuz")
        image.files = {"kernel": "vmlinuz"}
        if initrd is not None:
            shutil.copyfile(initrd, directory / "initrd.img")
            image.files["initrd"] = "initrd.img"
        image.kernel_cmdline = cmdline
        image.serves_ssh = False  # the busybox guest runs no SSH server
        image.aliases = ["voidvm-tiny", "busybox", "default"] if name == "tiny" else []
        image.size_bytes = sum((directory / f).stat().st_size for f in image.files.values())
        async with self.db.session() as s:
            repo = ImageRepository(s)
            old = await repo.by_name(name)
            if old is not None and not await repo.in_use(old.id):
                await repo.delete(old.id)
                shutil.rmtree(self.image_dir(old.id), ignore_errors=True)
            elif old is not None:
                shutil.rmtree(directory, ignore_errors=True)
                raise ConflictError(f"Image '{name}' is in use; delete its VMs first", code="IMAGE_IN_USE")
            await repo.add(image)
            if default:
                await repo.set_default(image.id)
                image.is_default = True
        return image

    async def set_default(self, ref: str) -> Image:
        image = await self.get(ref)
        async with self.db.session() as s:
            await ImageRepository(s).set_default(image.id)
        return await self.get(image.id)

    async def delete(self, ref: str) -> None:
        image = await self.get(ref)
        async with self.db.session() as s:
            repo = ImageRepository(s)
            if await repo.in_use(image.id):
                raise ConflictError("The image is used by a VM", code="IMAGE_IN_USE")
            await repo.delete(image.id)
        await asyncio.to_thread(shutil.rmtree, self.image_dir(image.id), True)

    async def recover(self, *, at_start: bool = False) -> None:
        """A download that will not finish: its partial files go; a catalog pull says so (VMs
        wait on it), a URL import leaves nothing behind. That is one whose operations all ended
        (its worker stopped: the operations' `recover` failed it first) or, `at_start`, one with
        no operation at all (from before operations were rows). A download just begun, whose
        operation is not written yet, is left alone."""
        async with self.db.reading() as s:
            downloading = [i for i in await ImageRepository(s).list() if i.status is ImageStatus.DOWNLOADING]
        for image in downloading:
            progress = await self.operations.progress_of(image.id) if self.operations is not None else None
            if progress == "unfinished" or (progress is None and not at_start):
                continue
            async with self.db.session() as s:
                repo = ImageRepository(s)
                current = await repo.get(image.id)
                if current is None or current.status is not ImageStatus.DOWNLOADING:
                    continue
                if is_catalog_pull(image) or await repo.in_use(image.id):
                    why = "the download was interrupted: the server stopped"
                    await repo.update(image.id, status=ImageStatus.ERROR.value, status_reason=why)
                else:
                    await repo.delete(image.id)
            await asyncio.to_thread(shutil.rmtree, self.image_dir(image.id), True)
