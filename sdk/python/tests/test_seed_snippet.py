"""The Python snippet from the user's API document, run against a live server.

The snippet below is verbatim except for the token. Because the snippet hardcodes
``base_url='http://localhost:3000/api/v1'``, the live server must listen there:
``VOIDVM_E2E_URL`` has to be that URL (anything else is skipped with a reason) and
``VOIDVM_E2E_TOKEN`` a valid token for it. Without both, the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from voidvm import NotFoundError
from voidvm import VoidVMClient as _Client

SEED_BASE_URL = "http://localhost:3000/api/v1"
E2E_URL = os.environ.get("VOIDVM_E2E_URL", "")
E2E_TOKEN = os.environ.get("VOIDVM_E2E_TOKEN", "")

pytestmark = [
    pytest.mark.skipif(
        not (E2E_URL and E2E_TOKEN),
        reason="needs a live VoidVM server: set VOIDVM_E2E_URL and VOIDVM_E2E_TOKEN",
    ),
    pytest.mark.skipif(
        bool(E2E_URL) and E2E_URL.rstrip("/") != SEED_BASE_URL,
        reason=f"the seed snippet hardcodes {SEED_BASE_URL}; VOIDVM_E2E_URL must be that URL",
    ),
]


def _delete_vms_named(name: str) -> None:
    with _Client(base_url=E2E_URL, token=E2E_TOKEN) as admin:
        for vm in admin.vms.list(search=name):
            if vm["name"] == name:
                with contextlib.suppress(NotFoundError):  # deleted meanwhile
                    admin.vms.delete(vm["id"], force=True)


@pytest.fixture
def no_leftover_my_vm() -> Iterator[None]:
    """VM names are unique per owner: remove ``my-vm`` before and after the run."""
    _delete_vms_named("my-vm")
    yield
    _delete_vms_named("my-vm")


@pytest.mark.usefixtures("no_leftover_my_vm")
def test_seed_python_snippet_runs_unchanged() -> None:
    # fmt: off
    # ---- begin: the user's snippet, verbatim except the token ----
    from voidvm import VoidVMClient

    client = VoidVMClient(
        base_url='http://localhost:3000/api/v1',
        token=E2E_TOKEN
    )

    # 获取虚拟机列表
    vms = client.vms.list()

    # 创建虚拟机
    new_vm = client.vms.create({
        'name': 'my-vm',
        'cpu': 2,
        'memory': 2048,
        'disk': 20
    })

    # 启动虚拟机
    client.vms.start(new_vm['id'])
    # ---- end of the user's snippet ----
    # fmt: on

    assert isinstance(vms, list)
    assert new_vm["name"] == new_vm.name == "my-vm"
    assert client.vms.get(new_vm["id"])["status"] == "running"
