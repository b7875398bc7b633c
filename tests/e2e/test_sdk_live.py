"""The TypeScript SDK's own end-to-end tests (sdk/typescript/test/e2e.test.mjs) against the live
server on localhost:3000: the seed's snippet, typed errors, the events socket and a serial console
round trip with the tiny guest.

The Python SDK's console round trip against a real server and guest is
tests/ws/test_sdk_contract.py::test_sdk_console_types_into_a_real_guest; its seed snippet runs in
tests/e2e/test_seed_examples.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import IN_CI, TCG_SCALE
from tests.e2e.conftest import ROOT, LiveServer

pytestmark = pytest.mark.qemu
SDK = ROOT / "sdk/typescript"


def test_typescript_sdk_e2e_suite_with_a_console_round_trip(live_server: LiveServer) -> None:
    if shutil.which("node") is None:
        if IN_CI:
            pytest.fail("Node.js is not installed")
        pytest.skip("Node.js is not installed")
    if not (SDK / "dist").exists() or not (SDK / "node_modules").exists():
        pytest.fail("build the TypeScript SDK first (make sdk-ts, part of make test)")
    env = {**os.environ, "VOIDVM_E2E_URL": live_server.base_url, "VOIDVM_E2E_TOKEN": live_server.token}
    out = subprocess.run(
        ["node", "--test", "--test-reporter=tap", "test/e2e.test.mjs"],
        cwd=SDK, env=env, capture_output=True, text=True, timeout=600 * TCG_SCALE,
    )  # fmt: skip
    report = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, report
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", out.stdout, re.M)}
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0, report
    assert counts.get("skipped") == 0, "a TypeScript e2e test was skipped:\n" + report
    assert counts.get("pass", 0) >= 4, report
    assert re.search(r"^ok \d+ - e2e: console round trip", out.stdout, re.M), report
