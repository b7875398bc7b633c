"""An image crosses the HostAgent port by id and file names; the agent side finds the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from voidvm_server.agent.local import boot_media
from voidvm_server.agent.port import ImageRef

ROOT = Path("/var/lib/voidvm/images")


def test_each_format_becomes_the_files_in_the_image_store() -> None:
    kernel = boot_media(
        ImageRef("img-1", "kernel", {"kernel": "vmlinuz", "initrd": "initrd.img"}, "ro"), ROOT
    )
    assert (kernel.kernel, kernel.initrd, kernel.kernel_cmdline) == (
        ROOT / "img-1/vmlinuz", ROOT / "img-1/initrd.img", "ro",
    )  # fmt: skip
    disk = boot_media(ImageRef("img-2", "qcow2", {"disk": "disk.qcow2"}), ROOT)
    assert (disk.base_disk, disk.base_format) == (ROOT / "img-2/disk.qcow2", "qcow2")
    assert boot_media(ImageRef("img-3", "iso", {"disk": "disk.iso"}), ROOT).cdrom == ROOT / "img-3/disk.iso"


@pytest.mark.parametrize(
    "ref",
    [
        ImageRef("..", "qcow2", {"disk": "disk.qcow2"}),
        ImageRef("img-1/../../etc", "qcow2", {"disk": "disk.qcow2"}),
        ImageRef("img-1", "qcow2", {"disk": "../../../etc/shadow"}),
        ImageRef("img-1", "qcow2", {"disk": "/etc/shadow"}),
        ImageRef("img-1", "kernel", {"kernel": ".hidden"}),
    ],
)
def test_a_reference_that_would_leave_the_image_store_is_refused(ref: ImageRef) -> None:
    with pytest.raises(ValueError):
        boot_media(ref, ROOT)
