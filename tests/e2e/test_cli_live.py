"""The real `voidvm` command against a real server (`local_server`: a `voidvm-server serve` child with
the QEMU tiny guest), step by step as a user types it: VMs by name, every resource, `--json` and
`--quiet`, one-line errors, a rate-limit notice, an upload, help that fits 80 columns and shell
completion that names a VM from the server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TCG_SCALE
from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.qemu

BIN = Path(sys.executable).parent
VOIDVM = str(BIN / "voidvm")


@dataclass
class Cli:
    env: dict[str, str]

    def run(
        self, *args: str, ok: bool = True, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [VOIDVM, *args], env={**self.env, **env}, input=input, capture_output=True, text=True,
            timeout=300 * TCG_SCALE,
        )  # fmt: skip
        if ok:
            assert result.returncode == 0, f"voidvm {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


def _env(server: ServerProcess, token: str, home: Path) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    return {**env, "PATH": path, "XDG_CONFIG_HOME": str(home), "VOIDVM_URL": server.root_url,
            "VOIDVM_TOKEN": token}  # fmt: skip


@pytest.fixture
def cli(local_server: ServerProcess, tmp_path: Path) -> Iterator[Cli]:
    token = local_server.login()
    yield Cli(_env(local_server, token, tmp_path))
    local_server.delete_every_vm(token)


def _user(server: ServerProcess, admin: Cli, tmp_path: Path) -> tuple[str, Cli]:
    """A fresh non-admin user and a CLI logged in as them."""
    name = f"u{uuid.uuid4().hex[:8]}"
    admin.run("user", "create", name, "--password", "pw-" + name, "--max-vms", "3")
    login = Cli({**admin.env, "VOIDVM_TOKEN": "", "XDG_CONFIG_HOME": str(tmp_path / name)})
    login.run("login", "--url", server.root_url, "-u", name, "-p", "pw-" + name)
    return name, login


def test_a_vm_by_name_from_create_to_delete(cli: Cli) -> None:
    name = f"web-{uuid.uuid4().hex[:6]}"
    created = cli.json("vm", "create", name, "--memory", "256", "--disk", "1", "--start")
    assert created["status"] == "running" and created["name"] == name

    listing = cli.run("vm", "ls").stdout
    header, *rows = listing.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "OWNER", "CPU", "MEM", "DISK", "SSH"]
    row = next(line for line in rows if name in line)
    assert row.split()[:4] == [created["id"], name, "running", "admin"]
    assert all(len(line) <= 80 for line in listing.splitlines())

    assert cli.run("vm", "ls", "-q").stdout.split() == [created["id"]]
    assert cli.json("vm", "show", name)["id"] == created["id"]
    assert cli.run("vm", "show", name, "--quiet").stdout.strip() == created["id"]
    assert cli.json("vm", "status", name)["status"] == "running"
    assert "cpu_percent" in cli.json("vm", "metrics", name)
    cli.run("vm", "wait", name, "running")

    stopped = cli.json("vm", "stop", name, "--timeout", "5")
    assert stopped["status"] == "stopped"
    resized = cli.json("vm", "resize", name, "--memory", "320", "--cpu", "2")
    assert (resized["memory"], resized["cpu"]) == (320, 2)
    renamed = cli.json("vm", "update", name, "--name", name + "-b", "--description", "front end")
    assert renamed["name"] == name + "-b" and renamed["description"] == "front end"
    assert cli.json("vm", "start", name + "-b")["status"] == "running"
    assert "tiny guest ready" in _wait_for_log(cli, name + "-b", "tiny guest ready")  # its boot messages

    cli.run("vm", "rm", name + "-b", "--force", "--yes")
    gone = cli.run("vm", "show", created["id"], ok=False)
    assert gone.returncode == 4


def _wait_for_log(cli: Cli, vm: str, text: str) -> str:
    deadline = time.monotonic() + 90 * TCG_SCALE
    while text not in (log := cli.run("vm", "log", vm).stdout) and time.monotonic() < deadline:
        time.sleep(0.5)
    return log


def test_errors_are_one_line_with_the_details_in_words(cli: Cli) -> None:
    missing = cli.run("vm", "show", "no-such-vm", ok=False)
    assert missing.returncode == 4
    assert missing.stderr.splitlines() == ["Error: VM_NOT_FOUND: no VM is named 'no-such-vm' or has that id"]

    rejected = cli.run("vm", "create", "bad", "--cpu", "999", "--memory", "256", "--disk", "1", ok=False)
    assert rejected.returncode == 2
    (line,) = rejected.stderr.splitlines()
    assert line.startswith("Error: VALIDATION_ERROR: ") and "cpu" in line, line
    assert not re.search(r"[{}\[\]]|Record\(", line), line
    assert "Traceback" not in rejected.stderr


def test_two_owners_one_name_asks_for_an_id(cli: Cli, local_server: ServerProcess, tmp_path: Path) -> None:
    _, alice = _user(local_server, cli, tmp_path)
    name = f"dup-{uuid.uuid4().hex[:6]}"
    mine = cli.json("vm", "create", name, "--memory", "256", "--disk", "1", "--no-wait")
    theirs = alice.json("vm", "create", name, "--memory", "256", "--disk", "1", "--no-wait")

    assert alice.json("vm", "show", name)["id"] == theirs["id"]  # alice sees only hers
    ambiguous = cli.run("vm", "show", name, ok=False)
    assert ambiguous.returncode == 2
    (line,) = ambiguous.stderr.splitlines()
    assert "AMBIGUOUS_NAME" in line and mine["id"] in line and theirs["id"] in line
    assert cli.json("vm", "show", mine["id"][:-2])["id"] == mine["id"]  # a unique id prefix will do
    cli.run("vm", "rm", theirs["id"], "--yes")


def test_users_tokens_config_and_audit(cli: Cli, local_server: ServerProcess, tmp_path: Path) -> None:
    name, user = _user(local_server, cli, tmp_path)
    assert user.json("whoami")["username"] == name
    assert name in cli.run("user", "ls").stdout
    assert cli.json("user", "update", name, "--max-vms", "4")["quota"]["max_vms"] == 4

    secret = user.run("token", "create", "ci-job").stdout.strip()
    assert secret and httpx.get(f"{local_server.base_url}/auth/me",
                                headers={"Authorization": f"Bearer {secret}"}).status_code == 200  # fmt: skip
    assert [t["name"] for t in user.json("token", "ls")] == ["ci-job"]
    user.run("token", "revoke", "ci-job", "--yes")
    assert user.json("token", "ls") == []

    cli.run("user", "passwd", name, "--password", "new-" + name)
    user.run("login", "--url", local_server.root_url, "-u", name, "-p", "new-" + name)
    cli.run("user", "update", name, "--disable")
    refused = user.run("login", "--url", local_server.root_url, "-u", name, "-p", "new-" + name, ok=False)
    assert refused.returncode == 6 and "ACCOUNT_DISABLED" in refused.stderr

    cli.run("config", "set", "default_quota.max_vms", "6")
    assert cli.run("config", "get", "default_quota.max_vms").stdout.strip() == "6"
    cli.run("config", "set", "default_quota.max_vms", "5")

    actions = [entry["action"] for entry in cli.json("audit", "--limit", "50")]
    assert "user.create" in actions and "config.update" in actions
    cli.run("user", "rm", name, "--yes")
    assert name not in cli.run("user", "ls").stdout


def test_a_rate_limit_is_waited_out_with_a_notice(
    cli: Cli, local_server: ServerProcess, tmp_path: Path
) -> None:
    name, user = _user(local_server, cli, tmp_path)
    vm = user.json("vm", "create", f"rl-{name}", "--memory", "256", "--disk", "1", "--no-wait")
    cli.run("config", "set", f"rate_limits.per_user.{name}", "1/second")
    try:
        # By name: a list, then a get in the same second; the get is refused once, then retried.
        result = user.run("vm", "show", vm["name"])
    finally:
        cli.run("config", "set", f"rate_limits.per_user.{name}", "1000/minute")
    assert re.search(r"Rate limited by the server; retrying in \d+ s", result.stderr), result.stderr


def test_upload_shows_progress_and_the_image_can_be_removed(cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "scratch.raw"
    disk.write_bytes(b"\0" * (3 * 1024 * 1024))
    name = f"scratch-{uuid.uuid4().hex[:6]}"
    uploaded = cli.run("image", "upload", str(disk), "--name", name)
    assert "Uploading scratch.raw" in uploaded.stderr and "3.0/3.0 MiB" in uploaded.stderr
    assert cli.json("image", "show", name)["format"] == "raw"
    assert name in [image["name"] for image in cli.json("image", "ls")]
    assert cli.json("image", "show", name)["id"] in cli.run("image", "ls", "-q").stdout.split()
    cli.run("image", "rm", name, "--yes")
    assert cli.run("image", "show", name, ok=False).returncode == 4


def _commands(cli: Cli, prefix: list[str]) -> Iterator[list[str]]:
    """Every command path, read from the help screens themselves."""
    yield prefix
    text = cli.run(*prefix, "--help").stdout
    if "Commands:" not in text:
        return
    for line in text.split("Commands:", 1)[1].splitlines():
        match = re.match(r"^  (\S+)\s", line)
        if match:
            yield from _commands(cli, [*prefix, match.group(1)])


def test_every_help_screen_fits_80_columns(cli: Cli) -> None:
    screens = list(_commands(cli, []))
    assert ["vm", "console"] in screens and ["config", "set"] in screens and ["audit"] in screens
    for path in screens:
        text = cli.run(*path, "--help").stdout
        wide = [line for line in text.splitlines() if len(line) > 80]
        assert not wide, f"voidvm {' '.join(path)} --help: {wide}"


def test_completion_names_a_vm_from_the_server_in_bash_zsh_and_fish(cli: Cli) -> None:
    name = f"comp-{uuid.uuid4().hex[:6]}"
    cli.run("vm", "create", name, "--memory", "256", "--disk", "1", "--no-wait")
    env = cli.env
    for shell in ("bash", "zsh", "fish"):
        script = cli.run("completion", shell).stdout
        assert "_VOIDVM_COMPLETE" in script, shell

    bash = subprocess.run(
        ["bash", "-c", 'source <(voidvm completion bash); COMP_WORDS=(voidvm vm start "$1"); COMP_CWORD=3; '
         '_voidvm_completion voidvm; printf "%s\\n" "${COMPREPLY[@]}"', "bash", name[:7]],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert name in bash.stdout.split(), bash.stdout + bash.stderr

    if shutil.which("fish"):
        fish = subprocess.run(
            ["fish", "-c", f"voidvm completion fish | source; complete -C 'voidvm vm show {name[:7]}'"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert name in fish.stdout.split(), fish.stdout + fish.stderr

    if shutil.which("zsh"):
        zsh_script = Path(env["XDG_CONFIG_HOME"]) / "_voidvm"
        zsh_script.parent.mkdir(parents=True, exist_ok=True)
        zsh_script.write_text(cli.run("completion", "zsh").stdout)
        syntax = subprocess.run(["zsh", "-n", str(zsh_script)], capture_output=True, text=True, timeout=60)
        assert syntax.returncode == 0, syntax.stderr
    # zsh's completion widget needs an interactive line editor; the protocol it calls is this:
    answer = cli.run(_VOIDVM_COMPLETE="complete_zsh", _TYPER_COMPLETE_ARGS=f"voidvm vm start {name[:7]}")
    assert name in answer.stdout
