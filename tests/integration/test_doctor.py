"""`voidvm-server doctor` run as a user runs it, on this host's real QEMU and /dev/kvm: the QEMU row
names qemu-system's version (not qemu-img's), and the accelerator's row says why it was chosen,
both when the probe runs and when its cached answer is read."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI, TCG_SCALE, qemu_missing_reason
from voidvm_server.drivers.qemu.probe import CACHE_FILE, kvm_device_usable

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _needs_qemu() -> None:
    reason = qemu_missing_reason()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def _doctor(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOIDVM_")}
    env |= {"VOIDVM_DATA_DIR": str(data_dir), "VOIDVM_CACHE_DIR": str(data_dir / "cache"),
            "COLUMNS": "300", "VOIDVM_LOG_LEVEL": "ERROR"}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "voidvm_server.cli", "doctor"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120 * TCG_SCALE,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _first_line(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[0]


def test_doctor_shows_qemu_systems_version_and_why_the_accelerator_was_chosen(tmp_path: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu is not None
    probed = _doctor(tmp_path)
    cached = _doctor(tmp_path)  # the second run reads the probe's answer from the cache

    for rows in (probed, cached):
        assert rows["qemu version"] == _first_line([qemu, "--version"]), rows
        assert rows["qemu version"].startswith("QEMU emulator version"), rows
        assert rows["qemu-img version"] == _first_line(["qemu-img", "--version"]), rows
        assert rows["accelerator"].split()[0] == probed["accelerator"].split()[0], rows

    accel = probed["accelerator"].split()[0]
    if not kvm_device_usable():
        assert accel == "tcg" and probed["accelerator reason"] == "/dev/kvm is absent or not permitted"
        return
    answer = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
    assert answer["accel"] == accel
    if accel == "tcg":  # this machine: /dev/kvm opens, yet KVM does not boot or is far slower
        assert re.match(r"/dev/kvm opens but (the KVM probe guest did not boot|KVM booted)",
                        probed["accelerator reason"]), probed  # fmt: skip
    else:
        assert probed["accelerator reason"].startswith("KVM booted the probe guest in"), probed
    assert "cached in" not in probed["accelerator reason"]
    assert cached["accelerator reason"].startswith(probed["accelerator reason"]), cached
    assert f"cached in {tmp_path / 'cache' / CACHE_FILE}" in cached["accelerator reason"], cached
