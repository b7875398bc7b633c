"""Hostile images and URLs are refused before any QEMU starts, and leave nothing on disk."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import Api, auth, fake_driver_factory, make_settings, running_api
from voidvm_server.errors import ValidationError
from voidvm_server.services import fetch

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
    reason="qemu-img is not installed",
)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def image_dirs(api: Api) -> set[str]:
    return {p.name for p in (api.container.settings.data_dir / "images").iterdir()}


async def import_file(api: Api, token: str, name: str, path: Path, fmt: str) -> httpx.Response:
    import_dir = api.container.settings.data_dir / "import"
    import_dir.mkdir(exist_ok=True)
    (import_dir / path.name).write_bytes(path.read_bytes())
    return await api.client.post(
        "/api/v1/images", json={"name": name, "format": fmt, "path": path.name}, headers=auth(token)
    )


async def test_qcow2_with_a_backing_file_is_refused(api: Api, admin_token: str, tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", str(evil), "1M")
    before = image_dirs(api)
    response = await import_file(api, admin_token, "evil", evil, "qcow2")
    assert response.status_code == 400
    assert "backing file" in response.json()["error"]["details"][0]["reason"]
    assert image_dirs(api) == before


async def test_qcow2_with_an_external_data_file_is_refused(
    api: Api, admin_token: str, tmp_path: Path
) -> None:
    evil = tmp_path / "datafile.qcow2"
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(evil), "1M")
    response = await import_file(api, admin_token, "datafile", evil, "qcow2")
    assert response.status_code == 400
    assert "data file" in response.json()["error"]["details"][0]["reason"]


async def test_raw_file_with_a_qcow2_header_is_refused(api: Api, admin_token: str, tmp_path: Path) -> None:
    disguised = tmp_path / "disguised.img"
    qemu_img("create", "-f", "qcow2", str(disguised), "1M")
    response = await import_file(api, admin_token, "disguised", disguised, "raw")
    assert response.status_code == 400
    assert "qcow2 header" in response.json()["error"]["details"][0]["reason"]


async def test_paths_outside_the_import_directory_are_refused(api: Api, admin_token: str) -> None:
    for path in [
        "/etc/passwd",
        "../../etc/passwd",
        "../voidvm.db",
        "../jwt-secret",
        "disk\x00.raw",
        "a" * 5000,
    ]:
        response = await api.client.post(
            "/api/v1/images",
            json={"name": "sneaky", "format": "raw", "path": path},
            headers=auth(admin_token),
        )
        assert response.status_code == 400, path
        assert response.json()["error"]["details"][0]["field"] == "path"


def minimal_iso(path: Path) -> Path:
    """An ISO 9660 image as far as the format's signature goes: a primary volume descriptor and
    the set terminator at sector 16 (what the import checks; QEMU reads it as raw)."""
    sector = 2048
    primary = b"\x01CD001\x01" + b"\x00" * (sector - 7)
    terminator = b"\xffCD001\x01" + b"\x00" * (sector - 7)
    path.write_bytes(b"\x00" * 16 * sector + primary + terminator + b"\x00" * 2 * sector)
    return path


async def test_an_iso_imports_and_a_fake_one_is_refused(api: Api, admin_token: str, tmp_path: Path) -> None:
    response = await import_file(
        api, admin_token, "installer", minimal_iso(tmp_path / "installer.iso"), "iso"
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["format"] == "iso"
    not_iso = tmp_path / "not.iso"
    not_iso.write_bytes(b"\x00" * 40960)
    refused = await import_file(api, admin_token, "not-iso", not_iso, "iso")
    assert refused.status_code == 400
    assert "ISO 9660" in refused.json()["error"]["details"][0]["reason"]


async def test_valid_upload_works_and_oversized_upload_leaves_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_upload_bytes=2 * 1024 * 1024)
    async with running_api(settings, fake_driver_factory, None) as api:
        token = await api.login()
        good = tmp_path / "good.qcow2"
        qemu_img("create", "-f", "qcow2", str(good), "64M")
        ok = await api.client.post(
            "/api/v1/images/upload?name=good&format=qcow2", content=good.read_bytes(), headers=auth(token)
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["data"]["virtual_size_bytes"] == 64 * 1024 * 1024
        before = image_dirs(api)
        big = await api.client.post(
            "/api/v1/images/upload?name=big&format=raw",
            content=b"\0" * (3 * 1024 * 1024),
            headers=auth(token),
        )
        assert big.status_code == 413
        assert image_dirs(api) == before
        names = [
            i["name"]
            for i in (await api.client.get("/api/v1/images", headers=auth(token))).json()["data"]["images"]
        ]
        assert "big" not in names


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("http://127.0.0.1/x.qcow2", ["127.0.0.1"]),
        ("http://metadata.internal/latest", ["169.254.169.254"]),
        ("http://intranet.example/x.qcow2", ["10.1.2.3"]),
        ("http://[::1]/x.qcow2", ["::1"]),
        ("file:///etc/passwd", []),
        # IPv6 forms that lead back to IPv4, or to internal networks
        ("http://nat64.example/x", ["64:ff9b::a9fe:a9fe"]),  # NAT64 of 169.254.169.254
        ("http://nat64.example/x", ["64:ff9b::808:808"]),  # NAT64 of a public address: still refused
        ("http://nat64.example/x", ["64:ff9b:1::7f00:1"]),  # local-use NAT64 prefix
        ("http://6to4.example/x", ["2002:7f00:1::1"]),  # 6to4 of 127.0.0.1
        ("http://6to4.example/x", ["2002:808:808::1"]),  # 6to4 of a public address
        ("http://compat.example/x", ["::7f00:1"]),  # IPv4-compatible 127.0.0.1
        ("http://compat.example/x", ["::a00:1"]),  # IPv4-compatible 10.0.0.1
        ("http://mapped.example/x", ["::ffff:10.0.0.1"]),
        ("http://sitelocal.example/x", ["fec0::1"]),
        ("http://teredo.example/x", ["2001:0:4136:e378:8000:63bf:3fff:fdd2"]),
        ("http://ula.example/x", ["fd00::1"]),
        ("http://linklocal.example/x", ["fe80::1%eth0"]),
        ("http://mixed.example/x", ["93.184.216.34", "::ffff:127.0.0.1"]),  # one bad answer is enough
    ],
)
async def test_urls_to_internal_addresses_are_refused(
    url: str, addresses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_resolve(host: str, port: int) -> list[str]:
        return addresses

    monkeypatch.setattr(fetch, "resolve", fake_resolve)
    with pytest.raises(ValidationError):
        await fetch.check_target(url, allow_private=False)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
async def test_public_addresses_are_allowed(address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_resolve(host: str, port: int) -> list[str]:
        return [address]

    monkeypatch.setattr(fetch, "resolve", fake_resolve)
    assert await fetch.check_target("https://images.example.org/x.qcow2", allow_private=False) == [address]


async def test_a_redirect_to_an_internal_address_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop looks public; its redirect points at the metadata service."""
    resolved: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return {"images.example.org": ["93.184.216.34"], "169.254.169.254": ["169.254.169.254"]}[host]

    requested: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append((str(request.url), request.headers["host"]))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    real_client = httpx.AsyncClient
    monkeypatch.setattr(fetch, "resolve", fake_resolve)
    monkeypatch.setattr(
        fetch.httpx, "AsyncClient", lambda **kw: real_client(transport=httpx.MockTransport(handler), **kw)
    )
    with pytest.raises(ValidationError, match="private"):
        await fetch.download("http://images.example.org/x.qcow2", tmp_path / "out", max_bytes=1024)
    # Sent to the address that was checked, under its own name; the internal hop never requested.
    assert requested == [("http://93.184.216.34/x.qcow2", "images.example.org")]
    assert resolved == ["images.example.org", "169.254.169.254"]


class _ImageServer:
    """A tiny HTTP server on 127.0.0.1 that records the Host header of every request."""

    def __init__(self, body: bytes) -> None:
        self.hosts: list[str] = []
        hosts = self.hosts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hosts.append(self.headers["Host"])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_the_connection_goes_to_the_address_that_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once per hop and that answer is the one connected to.
    The name does not exist in real DNS, so the download works only through the pinned address;
    the first address refuses connections (nothing listens on 127.0.0.2), the second serves."""
    lookups: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.2", "127.0.0.1"]

    monkeypatch.setattr(fetch, "resolve", fake_resolve)
    server = _ImageServer(b"disk bytes")
    try:
        url = f"http://images.invalid:{server.port}/x.raw"
        digest = await fetch.download(url, tmp_path / "out", max_bytes=1024, allow_private=True)
    finally:
        server.close()
    assert (tmp_path / "out").read_bytes() == b"disk bytes"
    assert digest == hashlib.sha256(b"disk bytes").hexdigest()
    assert lookups == ["images.invalid"]
    assert server.hosts == [f"images.invalid:{server.port}"]


def test_a_pinned_https_request_keeps_the_name_for_tls() -> None:
    target, headers, extensions = fetch.pinned("https://images.example.org:8443/a/b.qcow2?x=1", "2001:db8::7")
    assert target == "https://[2001:db8::7]:8443/a/b.qcow2?x=1"
    assert headers == {"Host": "images.example.org:8443"}
    assert extensions == {"sni_hostname": "images.example.org"}
