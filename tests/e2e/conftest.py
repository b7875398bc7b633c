"""Real VoidVM servers in child processes: `live_server` on http://localhost:3000 (the address the seed's
examples hard-code) and `local_server` on a free port (everything else a user drives from outside)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, qemu_missing_reason, require_qemu
from tests.server_process import ROOT, ServerProcess, port_busy, spawn_server

__all__ = ["ROOT", "LiveServer", "ServerProcess"]


@dataclass
class LiveServer:
    base_url: str
    token: str
    data_dir: Path


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server on port 3000, for the seed's examples that hard-code it."""
    reason = qemu_missing_reason() or ("port 3000 is in use" if port_busy(3000) else None)
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    server = spawn_server(tmp_path_factory.mktemp("live"), port=3000)
    try:
        token = server.login()
        yield LiveServer(server.base_url, token, server.data_dir)
        server.delete_every_vm(token)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real server on a free port, shared by the tests that drive it as a user would (the CLI,
    README snippets). Tests clean up what they create."""
    require_qemu()
    # Many tests share this server's admin: the default 100 requests a minute per user would make
    # them wait on each other (rate limits have their own tests, and test_cli_live sets one per user).
    server = spawn_server(tmp_path_factory.mktemp("local"), env={"VOIDVM_RATE_LIMIT": "100000/minute"})
    try:
        yield server
        server.delete_every_vm(server.login())
    finally:
        server.stop()
