"""Install the built-in tiny guest into the image store (used by the CLI and the test suite)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from voidvm_server.config import Settings
from voidvm_server.data_dir import prepare_data_dir
from voidvm_server.domain.models import Image
from voidvm_server.drivers.qemu.images import QemuImg
from voidvm_server.drivers.qemu.tiny_image import TINY_KERNEL_CMDLINE, build_tiny_image
from voidvm_server.persistence.engine import Database
from voidvm_server.services.images import ImageService
from voidvm_server.services.live_config import LiveConfigStore

log = logging.getLogger(__name__)
TINY_NAME = "tiny"


async def install_tiny_image(settings: Settings, *, rebuild: bool = False) -> Image:
    """Build the tiny guest and make it the default image, unless it is already there."""
    prepare_data_dir(settings.data_dir)
    db = Database(settings.resolved_database_url)
    try:
        await db.migrate()
        images = ImageService(db, settings, QemuImg(settings.qemu_img_binary))
        if not rebuild:
            for image in await images.list():
                if image.name == TINY_NAME:
                    return image
        with tempfile.TemporaryDirectory(prefix="voidvm-tiny-") as tmp:
            log.info("Building the tiny guest image from the host's kernel and busybox")
            files = build_tiny_image(Path(tmp))
            live = LiveConfigStore(db, settings)
            await live.load()
            default = live.current.default_image == TINY_NAME
            return await images.register_kernel_image(
                TINY_NAME, files.kernel, files.initrd, TINY_KERNEL_CMDLINE, default=default
            )
    finally:
        await db.close()
