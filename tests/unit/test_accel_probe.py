"""The accelerator rule: KVM only when it boots the probe and is not much slower than TCG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voidvm_server.drivers.qemu import probe
from voidvm_server.drivers.qemu.probe import choose_accel, kvm_is_fast_enough


@pytest.mark.parametrize(
    ("kvm", "tcg", "expected"),
    [
        (0.05, 0.09, True),  # real hardware: KVM is the faster one
        (0.30, 0.10, True),  # a loaded host: within 2x + 0.2 s
        (1.44, 0.09, False),  # nested KVM that crawls (measured on a development machine)
        (None, 0.09, False),  # KVM never answered
        (0.05, None, True),  # TCG did not answer: KVM did, so use it
    ],
)
def test_kvm_is_chosen_only_when_it_is_not_much_slower(
    kvm: float | None, tcg: float | None, expected: bool
) -> None:
    assert kvm_is_fast_enough(kvm, tcg) is expected


async def test_a_cached_answer_from_an_older_rule_is_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / probe.CACHE_FILE).write_text(json.dumps({"qemu_version": "7.2", "accel": "kvm"}))
    timings = {"kvm": 1.5, "tcg": 0.1}

    async def fake_probe(binary: str, accel: str) -> float | None:
        return timings[accel]

    monkeypatch.setattr(probe, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(probe, "_boot_probe", fake_probe)
    assert await choose_accel("auto", "qemu-system-x86_64", "7.2", tmp_path) == "tcg"
    cached = json.loads((tmp_path / probe.CACHE_FILE).read_text())
    assert cached["rule"] == probe.RULE and cached["accel"] == "tcg" and cached["boot"] == probe.host_boot()
    timings["kvm"] = 0.05  # the cache answers now, whatever a new probe would say
    assert await choose_accel("auto", "qemu-system-x86_64", "7.2", tmp_path) == "tcg"


async def test_a_cached_answer_from_another_boot_is_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is the host's: a reboot (or a copy of it on another machine) must probe again."""
    stale = {
        "qemu_version": "7.2",
        "rule": probe.RULE,
        "boot": "6.1.0 another-boot",
        "accel": "kvm",
        "binary": str(Path(shutil.which("qemu-system-x86_64") or "qemu-system-x86_64").resolve()),
    }
    (tmp_path / probe.CACHE_FILE).write_text(json.dumps(stale))
    probed: list[str] = []

    async def fake_probe(binary: str, accel: str) -> float | None:
        probed.append(accel)
        return {"kvm": 1.5, "tcg": 0.1}[accel]

    monkeypatch.setattr(probe, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(probe, "_boot_probe", fake_probe)
    assert await choose_accel("auto", "qemu-system-x86_64", "7.2", tmp_path) == "tcg"
    assert probed, "the stale answer was taken"
    assert json.loads((tmp_path / probe.CACHE_FILE).read_text())["boot"] == probe.host_boot()
