"""Well-known cloud images, pulled on first use. Each checksum comes from the publisher's
own checksum file beside the image, fetched over HTTPS and matched by file name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogImage:
    name: str
    aliases: tuple[str, ...]
    url: str
    sums_url: str
    format: str = "qcow2"

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_UBUNTU = "https://cloud-images.ubuntu.com/releases"
_DEBIAN = "https://cloud.debian.org/images/cloud"

CATALOG: tuple[CatalogImage, ...] = (
    CatalogImage(
        "ubuntu20.04", ("ubuntu-20.04", "focal"),
        f"{_UBUNTU}/focal/release/ubuntu-20.04-server-cloudimg-amd64.img",
        f"{_UBUNTU}/focal/release/SHA256SUMS",
    ),
    CatalogImage(
        "ubuntu22.04", ("ubuntu-22.04", "jammy"),
        f"{_UBUNTU}/jammy/release/ubuntu-22.04-server-cloudimg-amd64.img",
        f"{_UBUNTU}/jammy/release/SHA256SUMS",
    ),
    CatalogImage(
        "ubuntu24.04", ("ubuntu-24.04", "noble"),
        f"{_UBUNTU}/noble/release/ubuntu-24.04-server-cloudimg-amd64.img",
        f"{_UBUNTU}/noble/release/SHA256SUMS",
    ),
    CatalogImage(
        "debian12", ("debian-12", "bookworm"),
        f"{_DEBIAN}/bookworm/latest/debian-12-generic-amd64.qcow2",
        f"{_DEBIAN}/bookworm/latest/SHA512SUMS",
    ),
)  # fmt: skip


def find(name: str) -> CatalogImage | None:
    key = name.lower()
    for entry in CATALOG:
        if key == entry.name or key in entry.aliases:
            return entry
    return None


def expected_checksum(sums_text: str, file_name: str) -> str | None:
    for line in sums_text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == file_name:
            return parts[0].lower()
    return None
