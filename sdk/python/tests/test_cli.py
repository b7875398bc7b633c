"""The ``voidvm`` CLI through typer's CliRunner; clients come from an injected factory."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from voidvm import VoidVMClient
from voidvm.cli import CliDeps, ExitCode, make_app
from voidvm.cli._config import ConfigStore, StoredLogin, default_config_path
from voidvm.cli.app import normalize_api_url
from voidvm_testkit import FakeAPI, accepted, fail, json_body, ok, operation, vm

URL = "http://vm.test:3000/api/v1"


class Harness:
    def __init__(self, api: FakeAPI, config_path: Path) -> None:
        self.api = api
        self.config_path = config_path
        self.made: list[tuple[str, str | None]] = []
        self.runner = CliRunner(env={"VOIDVM_URL": None, "VOIDVM_TOKEN": None})

    def factory(self, base_url: str, token: str | None) -> VoidVMClient:
        self.made.append((base_url, token))
        return VoidVMClient(
            base_url, token, transport=self.api.transport, retry_on_rate_limit=False
        )

    def run(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Any:
        deps = CliDeps(client_factory=self.factory, config_path=self.config_path)
        return self.runner.invoke(make_app(deps), list(args), input=input, env=env)

    def login_stored(self, token: str = "stored-jwt", url: str = URL) -> None:
        ConfigStore(self.config_path).save(StoredLogin(url=url, token=token, username="admin"))


@pytest.fixture
def cli(tmp_path: Path) -> Harness:
    return Harness(FakeAPI(), tmp_path / "cfg" / "voidvm" / "config.json")


AUTH_ENV = {"VOIDVM_URL": URL, "VOIDVM_TOKEN": "env-token"}


def vm_page(*vms: dict[str, Any]) -> httpx.Response:
    return ok(
        {"vms": list(vms), "pagination": {"page": 1, "limit": 100, "total": len(vms), "pages": 1}}
    )


def test_login_with_flags_stores_a_private_config(cli: Harness) -> None:
    cli.api.on("POST", "/auth/login", ok({"token": "jwt-xyz", "user": {"username": "admin"}}))
    result = cli.run("login", "--url", "http://vm.test:3000", "-u", "admin", "-p", "admin123")

    assert result.exit_code == 0, result.output
    assert json_body(cli.api.last) == {"username": "admin", "password": "admin123"}
    assert cli.made == [(URL, None)]
    stored = json.loads(cli.config_path.read_text())
    assert stored == {"url": URL, "token": "jwt-xyz", "username": "admin"}
    assert stat.S_IMODE(cli.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_path.parent.stat().st_mode) == 0o700
    assert "jwt-xyz" not in result.output


def test_login_prompts_for_missing_values(cli: Harness) -> None:
    cli.api.on("POST", "/auth/login", ok({"token": "jwt-p"}))
    result = cli.run("login", input=f"{URL}\nalice\nsecret-pw\n")

    assert result.exit_code == 0, result.output
    assert json_body(cli.api.last) == {"username": "alice", "password": "secret-pw"}
    assert "secret-pw" not in result.output
    assert ConfigStore(cli.config_path).load().token == "jwt-p"


def test_wrong_password_exits_3_and_stores_nothing(cli: Harness) -> None:
    cli.api.on(
        "POST", "/auth/login", fail(401, "INVALID_CREDENTIALS", "wrong username or password")
    )
    result = cli.run("login", "--url", URL, "-u", "admin", "-p", "nope")
    assert result.exit_code == ExitCode.AUTH == 3
    assert "INVALID_CREDENTIALS" in result.stderr
    assert not cli.config_path.exists()


def test_stored_login_is_used_by_later_commands(cli: Harness) -> None:
    cli.login_stored()
    cli.api.on("GET", "/vms", vm_page(vm("vm-00000000000a", "running", name="web")))
    result = cli.run("vm", "list")

    assert result.exit_code == 0, result.output
    assert cli.made == [(URL, "stored-jwt")]
    assert cli.api.last.headers["Authorization"] == "Bearer stored-jwt"
    assert (
        "web" in result.stdout and "running" in result.stdout and "vm-00000000000a" in result.stdout
    )


def test_env_vars_override_the_stored_login(cli: Harness) -> None:
    cli.login_stored()
    cli.api.on("GET", "/vms", vm_page())
    result = cli.run("vm", "list", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert cli.made == [(URL, "env-token")]


def test_stored_token_is_never_sent_to_another_url(cli: Harness) -> None:
    cli.login_stored(url="http://other.test:3000/api/v1")
    result = cli.run("vm", "list", env={"VOIDVM_URL": URL})
    assert result.exit_code == ExitCode.AUTH
    assert cli.made == []
    assert "voidvm login" in result.stderr


def test_vm_list_json_is_machine_readable(cli: Harness) -> None:
    cli.api.on("GET", "/vms", vm_page(vm("vm-00000000000a"), vm("vm-00000000000b")))
    result = cli.run("vm", "list", "--json", "--status", "stopped", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert [v["id"] for v in json.loads(result.stdout)] == ["vm-00000000000a", "vm-00000000000b"]
    assert cli.api.last.url.params["status"] == "stopped"


def test_vm_create_waits_for_the_vm_to_be_ready(cli: Harness) -> None:
    cli.api.on("POST", "/vms", ok(vm("vm-000000000009", "creating", name="db"), status=201))
    cli.api.on("GET", "/vms/vm-000000000009", ok(vm("vm-000000000009", "stopped", name="db")))
    result = cli.run(
        "vm",
        "create",
        "db",
        "--cpu",
        "2",
        "--memory",
        "2048",
        "--disk",
        "20",
        "--os",
        "tiny",
        "--json",
        env=AUTH_ENV,
    )
    assert result.exit_code == 0, result.output
    assert json_body(cli.api.requests[0]) == {
        "name": "db",
        "cpu": 2,
        "memory": 2048,
        "disk": 20,
        "os": "tiny",
    }
    assert json.loads(result.stdout)["status"] == "stopped"


@pytest.mark.parametrize(
    ("args", "path", "body"),
    [
        (["start", "vm-00000000000a"], "/vms/vm-00000000000a/start", {"wait": True}),
        (
            ["stop", "vm-00000000000a", "--force"],
            "/vms/vm-00000000000a/stop",
            {"wait": True, "force": True},
        ),
        (
            ["stop", "vm-00000000000a", "--timeout", "5", "--no-wait"],
            "/vms/vm-00000000000a/stop",
            {"wait": False, "timeout": 5.0},
        ),
        (["restart", "vm-00000000000a"], "/vms/vm-00000000000a/restart", {"wait": True}),
    ],
)
def test_vm_actions(cli: Harness, args: list[str], path: str, body: dict[str, Any]) -> None:
    cli.api.on("POST", path, ok(vm("vm-00000000000a", "running")))
    result = cli.run("vm", *args, env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert cli.api.last.url.path == f"/api/v1{path}"
    assert json_body(cli.api.last) == body


def test_vm_show_prints_fields(cli: Harness) -> None:
    cli.api.on(
        "GET", "/vms/vm-00000000000a", ok(vm("vm-00000000000a", "running", ports={"ssh": 22001}))
    )
    result = cli.run("vm", "show", "vm-00000000000a", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert "ports.ssh" in result.stdout and "22001" in result.stdout


def test_vm_delete_asks_first(cli: Harness) -> None:
    cli.api.on("DELETE", "/vms/vm-00000000000a", ok(None))
    declined = cli.run("vm", "delete", "vm-00000000000a", input="n\n", env=AUTH_ENV)
    assert declined.exit_code == 1
    assert cli.api.requests == []

    accepted = cli.run("vm", "delete", "vm-00000000000a", "--yes", "--force", env=AUTH_ENV)
    assert accepted.exit_code == 0, accepted.output
    assert cli.api.last.method == "DELETE"
    assert cli.api.last.url.params["force"] == "true"


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (
            fail(400, "VALIDATION_ERROR", "bad", [{"field": "cpu", "reason": "too many"}]),
            ExitCode.USAGE,
        ),
        (fail(401, "TOKEN_EXPIRED"), ExitCode.AUTH),
        (fail(403, "QUOTA_EXCEEDED"), ExitCode.FORBIDDEN),
        (fail(403, "FORBIDDEN"), ExitCode.FORBIDDEN),
        (fail(404, "VM_NOT_FOUND", "虚拟机不存在"), ExitCode.NOT_FOUND),
        (fail(409, "VM_ALREADY_RUNNING"), ExitCode.CONFLICT),
        (fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "1"}), ExitCode.RATE_LIMITED),
        (fail(500, "INTERNAL_SERVER_ERROR"), ExitCode.SERVER),
        (fail(405, "METHOD_NOT_ALLOWED"), ExitCode.ERROR),
    ],
)
def test_errors_map_to_exit_codes(cli: Harness, response: httpx.Response, code: ExitCode) -> None:
    cli.api.on("POST", "/vms/vm-00000000000a/start", response)
    result = cli.run("vm", "start", "vm-00000000000a", env=AUTH_ENV)
    assert result.exit_code == code
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Record(" not in result.stderr and "{" not in result.stderr
    # The request id is what an admin greps the server log for: shown for server failures.
    assert ("req-err" in result.stderr) == (code == ExitCode.SERVER)


def test_validation_details_are_printed(cli: Harness) -> None:
    cli.api.on(
        "POST",
        "/vms",
        fail(400, "VALIDATION_ERROR", "invalid", [{"field": "cpu", "reason": "max 16"}]),
    )
    result = cli.run("vm", "create", "x", "--cpu", "99", env=AUTH_ENV)
    assert result.exit_code == ExitCode.USAGE
    assert "cpu: max 16" in result.stderr


def test_unreachable_server_exits_9(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    deps = CliDeps(
        client_factory=lambda url, token: VoidVMClient(
            url, token, transport=httpx.MockTransport(refuse)
        ),
        config_path=tmp_path / "c.json",
    )
    result = CliRunner().invoke(make_app(deps), ["system", "info"], env=AUTH_ENV)
    assert result.exit_code == ExitCode.CONNECTION == 9


def test_errors_in_json_mode_are_json_on_stderr(cli: Harness) -> None:
    cli.api.on("GET", "/vms/vm-000000000404", fail(404, "VM_NOT_FOUND", "missing"))
    result = cli.run("vm", "show", "vm-000000000404", "--json", env=AUTH_ENV)
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "VM_NOT_FOUND" and error["request_id"] == "req-err"


def test_not_logged_in_exits_3(cli: Harness) -> None:
    result = cli.run("vm", "list")
    assert result.exit_code == ExitCode.AUTH
    assert cli.api.requests == []


def test_image_list_and_system_info(cli: Harness) -> None:
    image = {
        "id": "img-1",
        "name": "tiny",
        "format": "qcow2",
        "status": "available",
        "size_bytes": 50 * 1024**2,
        "is_default": True,
        "aliases": ["default"],
    }
    cli.api.on("GET", "/images", ok({"images": [image]}))
    cli.api.on(
        "GET",
        "/system/info",
        ok({"version": "0.1.0", "accelerator": "tcg", "host": {"arch": "x86_64"}}),
    )

    images = cli.run("image", "list", env=AUTH_ENV)
    info = cli.run("system", "info", "--json", env=AUTH_ENV)

    assert images.exit_code == 0, images.output
    assert "tiny" in images.stdout and "50.0 MiB" in images.stdout
    assert info.exit_code == 0, info.output
    assert json.loads(info.stdout)["host"]["arch"] == "x86_64"


def test_logout_revokes_and_forgets_the_token(cli: Harness) -> None:
    cli.login_stored()
    cli.api.on("POST", "/auth/logout", ok(None))
    result = cli.run("logout")
    assert result.exit_code == 0, result.output
    assert cli.api.last.headers["Authorization"] == "Bearer stored-jwt"
    assert ConfigStore(cli.config_path).load() == StoredLogin(url=URL, username="admin")


def test_console_without_a_terminal_is_a_usage_error(cli: Harness) -> None:
    result = cli.run("vm", "console", "vm-00000000000a", env=AUTH_ENV)
    assert result.exit_code == ExitCode.USAGE


def test_usage_errors_exit_2(cli: Harness) -> None:
    assert cli.run("vm", "start").exit_code == 2
    assert cli.run("vm", "frobnicate").exit_code == 2


def test_config_path_honours_xdg_config_home(tmp_path: Path) -> None:
    assert (
        default_config_path({"XDG_CONFIG_HOME": str(tmp_path)})
        == tmp_path / "voidvm" / "config.json"
    )
    assert (
        default_config_path({"XDG_CONFIG_HOME": "relative"})
        == Path.home() / ".config" / "voidvm" / "config.json"
    )
    assert default_config_path({}) == Path.home() / ".config" / "voidvm" / "config.json"


def test_version_flag() -> None:
    result = CliRunner().invoke(make_app(), ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("voidvm ")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:3000", "http://h:3000/api/v1"),
        ("h:3000/", "http://h:3000/api/v1"),
        ("https://h/api/v1/", "https://h/api/v1"),
        ("https://h/prefix/api/v1", "https://h/prefix/api/v1"),
    ],
)
def test_urls_given_to_the_cli_are_normalized(given: str, expected: str) -> None:
    assert normalize_api_url(given) == expected


def test_the_library_does_not_import_the_cli_stack() -> None:
    # (httpx itself imports rich when it is installed, so only typer and our CLI are checked)
    code = (
        "import sys, voidvm; print(sorted(m for m in ('typer', 'voidvm.cli') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- names, tables, errors, config keys ---------------------------------------------------------


def test_a_vm_name_is_resolved_to_its_id(cli: Harness) -> None:
    cli.api.on(
        "GET",
        "/vms",
        vm_page(vm("vm-00000000000a", name="web"), vm("vm-00000000000b", name="web2")),
    )
    cli.api.on(
        "POST", "/vms/vm-00000000000a/start", ok(vm("vm-00000000000a", "running", name="web"))
    )
    result = cli.run("vm", "start", "web", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert cli.api.requests[0].url.params["search"] == "web"
    assert cli.api.last.url.path == "/api/v1/vms/vm-00000000000a/start"


def test_an_ambiguous_name_lists_the_ids_and_sends_nothing(cli: Harness) -> None:
    twins = vm_page(
        vm("vm-00000000000a", name="web", owner="alice"),
        vm("vm-00000000000b", name="web", owner="bob"),
    )
    cli.api.on("GET", "/vms", twins)
    result = cli.run("vm", "delete", "web", "--yes", env=AUTH_ENV)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.strip() == (
        "Error: AMBIGUOUS_NAME: 2 VMs match 'web': use an id "
        "(vm-00000000000a (owner alice); vm-00000000000b (owner bob))"
    )
    assert all(request.method == "GET" for request in cli.api.requests)


def test_tables_fit_80_columns_by_cutting_free_text_only() -> None:
    from voidvm.cli._output import Column, _fit

    columns = [Column("ID", lambda r: r["id"]), Column("NOTE", lambda r: r["note"], shrink=True)]
    rows = [["vm-00000000000a", "x" * 200]]
    widths = _fit(["ID", "NOTE"], rows, columns, 80)
    assert widths[0] == len("vm-00000000000a") and sum(widths) + 2 <= 80


def test_quiet_prints_ids_only(cli: Harness) -> None:
    cli.api.on("GET", "/vms", vm_page(vm("vm-00000000000a"), vm("vm-00000000000b")))
    result = cli.run("vm", "ls", "-q", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["vm-00000000000a", "vm-00000000000b"]
    assert result.stderr == ""


def test_error_details_are_words_not_reprs() -> None:
    from voidvm import ValidationError
    from voidvm.cli._output import error_line

    error = ValidationError(
        "invalid", code="VALIDATION_ERROR", details=[{"field": "cpu", "reason": "at most 32"}]
    )
    assert error_line(error) == "Error: VALIDATION_ERROR: invalid (cpu: at most 32)"
    mapping = ValidationError(
        "no", code="IMAGE_NOT_AVAILABLE", details={"image": "u20", "reason": "offline"}
    )
    assert error_line(mapping) == "Error: IMAGE_NOT_AVAILABLE: no (image: u20; reason: offline)"


def test_config_set_builds_a_nested_patch(cli: Harness) -> None:
    from voidvm.cli.server_config import parse_value, patch_for

    assert patch_for("rate_limits.per_user.alice", "5/second") == {
        "rate_limits": {"per_user": {"alice": "5/second"}}
    }
    assert parse_value("10") == 10 and parse_value("true") is True and parse_value("a/b") == "a/b"
    cli.api.on("PUT", "/config", ok({"default_quota": {"max_vms": 7}}))
    result = cli.run("config", "set", "default_quota.max_vms", "7", env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert json_body(cli.api.last) == {"default_quota": {"max_vms": 7}}


def test_rate_limit_waits_are_announced(cli: Harness) -> None:
    from voidvm import VoidVMClient

    def factory(base_url: str, token: str | None) -> VoidVMClient:
        return VoidVMClient(base_url, token, transport=cli.api.transport)

    cli.api.on("GET", "/vms", fail(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "0"}), vm_page())
    deps = CliDeps(client_factory=factory, config_path=cli.config_path)
    result = cli.runner.invoke(make_app(deps), ["vm", "ls"], env=AUTH_ENV)
    assert result.exit_code == 0, result.output
    assert "Rate limited by the server; retrying in 0 s" in result.stderr


def test_an_expired_stored_token_is_refreshed_once_and_saved(cli: Harness) -> None:
    store = ConfigStore(cli.config_path)
    store.save(
        StoredLogin(url=URL, token="old-jwt", username="admin", refresh_token="r1", expires_at=1.0)
    )
    cli.api.on(
        "POST", "/auth/refresh", ok({"token": "new-jwt", "refresh_token": "r2", "expires_in": 3600})
    )
    cli.api.on("GET", "/vms", vm_page())
    result = cli.run("vm", "ls")
    assert result.exit_code == 0, result.output
    assert json_body(cli.api.requests[0]) == {"refresh_token": "r1"}
    assert cli.api.last.headers["Authorization"] == "Bearer new-jwt"
    saved = store.load()
    assert (
        (saved.token, saved.refresh_token) == ("new-jwt", "r2")
        and saved.expires_at
        and saved.expires_at > 1e9
    )


# -- operations ---------------------------------------------------------------------------------

OP = "op-00000000000a"


def op_page(*ops: dict[str, Any], pages: int = 1) -> httpx.Response:
    pagination = {"page": 1, "limit": 20, "total": len(ops) * pages, "pages": pages}
    return ok({"operations": list(ops), "pagination": pagination})


def test_operation_list_shows_a_table_and_passes_the_filters(cli: Harness) -> None:
    cli.api.on("GET", "/vms", vm_page(vm("vm-00000000000a", name="web")))
    cli.api.on(
        "GET",
        "/operations",
        op_page(
            operation(OP, type="image.import", resource_id="img-00000000000b", progress=42),
            operation("op-00000000000b", "failed", resource_id="vm-00000000000a"),
            pages=2,
        ),
    )
    result = cli.run(
        "operation", "ls", "--status", "running", "--type", "vm.start", "--resource", "web",
        env=AUTH_ENV,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "PROGRESS", "RESOURCE", "AGE"]
    assert first.split()[:5] == [OP, "image.import", "running", "42%", "img-00000000000b"]
    assert second.split()[:5] == ["op-00000000000b", "vm.start", "failed", "-", "vm-00000000000a"]
    assert first.split()[5].endswith("d")  # created long ago: days
    assert dict(cli.api.last.url.params) == {
        "page": "1",
        "limit": "20",
        "status": "running",
        "type": "vm.start",
        "resource_id": "vm-00000000000a",
    }
    assert "2 operations" in result.stderr and "More on --page 2" in result.stderr


def test_operation_list_quiet_and_json_and_the_op_alias(cli: Harness) -> None:
    cli.api.on("GET", "/operations", op_page(operation(OP), operation("op-00000000000b")))
    quiet = cli.run("op", "ls", "-q", env=AUTH_ENV)
    as_json = cli.run("operation", "list", "--json", "--limit", "5", "--page", "3", env=AUTH_ENV)

    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout.split() == [OP, "op-00000000000b"] and quiet.stderr == ""
    assert as_json.exit_code == 0, as_json.output
    assert [op["status"] for op in json.loads(as_json.stdout)] == ["running", "running"]
    assert (cli.api.last.url.params["limit"], cli.api.last.url.params["page"]) == ("5", "3")


def test_operation_show_takes_an_id_prefix(cli: Harness) -> None:
    cli.api.on("GET", "/operations", op_page(operation(OP), operation("op-0b0000000000")))
    cli.api.on("GET", f"/operations/{OP}", ok(operation(OP, "succeeded", result={"image_id": "i"})))
    result = cli.run("op", "show", "0000", env=AUTH_ENV)
    ambiguous = cli.run("op", "show", "0", env=AUTH_ENV)

    assert result.exit_code == 0, result.output
    assert cli.api.paths()[1] == f"GET /api/v1/operations/{OP}"
    assert "result.image_id" in result.stdout and "succeeded" in result.stdout
    assert cli.api.requests[0].url.params["limit"] == "100"
    assert ambiguous.exit_code == ExitCode.USAGE and "AMBIGUOUS_NAME" in ambiguous.stderr


def test_operation_wait_succeeds_and_prints_the_operation_with_json(cli: Harness) -> None:
    cli.api.on(
        "GET",
        f"/operations/{OP}/wait",
        ok(operation(OP, progress=50)),
        ok(operation(OP, "succeeded")),
    )
    result = cli.run("op", "wait", OP, "--json", env=AUTH_ENV)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "succeeded"
    assert [r.url.path for r in cli.api.requests] == [f"/api/v1/operations/{OP}/wait"] * 2


@pytest.mark.parametrize(
    ("ended", "code", "line"),
    [
        (
            operation(OP, "failed", error={"code": "VALIDATION_ERROR", "message": "bad url"}),
            ExitCode.USAGE,
            f"Error: VALIDATION_ERROR: bad url (operation: {OP})",
        ),
        (
            operation(OP, "failed", error={"code": "HYPERVISOR_TIMEOUT", "message": "slow"}),
            ExitCode.SERVER,
            f"Error: HYPERVISOR_TIMEOUT: slow (operation: {OP})",
        ),
        (
            operation(OP, "cancelled", type="image.pull"),
            ExitCode.CONFLICT,
            f"Error: OPERATION_CANCELLED: the image.pull operation was cancelled (operation: {OP})",
        ),
    ],
)
def test_operation_wait_exits_non_zero_when_it_did_not_succeed(
    cli: Harness, ended: dict[str, Any], code: ExitCode, line: str
) -> None:
    cli.api.on("GET", f"/operations/{OP}/wait", ok(ended))
    result = cli.run("operation", "wait", OP, env=AUTH_ENV)
    assert result.exit_code == code
    assert result.stderr.strip() == line
    assert result.stdout == ""


def test_operation_wait_times_out_with_exit_10(cli: Harness) -> None:
    cli.api.on("GET", f"/operations/{OP}/wait", ok(operation(OP)))
    result = cli.run("op", "wait", OP, "--timeout", "0", env=AUTH_ENV)
    assert result.exit_code == ExitCode.TIMEOUT == 10
    assert result.stderr.strip() == (
        f"Error: WAIT_TIMEOUT: the vm.start operation is still running after 0 s (operation: {OP})"
    )


def test_operation_cancel(cli: Harness) -> None:
    cli.api.on("DELETE", f"/operations/{OP}", ok(operation(OP, "cancelled", type="image.pull")))
    done = cli.run("op", "cancel", OP, "-q", env=AUTH_ENV)
    cli.api.on("DELETE", f"/operations/{OP}", fail(409, "NOT_CANCELLABLE", "it has succeeded"))
    refused = cli.run("op", "cancel", OP, env=AUTH_ENV)

    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == OP
    assert cli.api.requests[0].method == "DELETE"
    assert refused.exit_code == ExitCode.CONFLICT
    assert refused.stderr.strip() == "Error: NOT_CANCELLABLE: it has succeeded"


def test_vm_actions_without_waiting_print_the_operation_id(cli: Harness) -> None:
    cli.api.on(
        "POST",
        "/vms/vm-00000000000a/start",
        accepted(vm("vm-00000000000a", "starting"), operation(OP, resource_id="vm-00000000000a")),
    )
    quiet = cli.run("vm", "start", "vm-00000000000a", "--no-wait", "-q", env=AUTH_ENV)
    told = cli.run("vm", "start", "vm-00000000000a", "--no-wait", env=AUTH_ENV)
    as_json = cli.run("vm", "start", "vm-00000000000a", "--no-wait", "--json", env=AUTH_ENV)

    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout.strip() == OP
    assert json_body(cli.api.last) == {"wait": False}
    assert told.stderr.strip() == f"vm-00000000000a: starting, operation {OP}"
    shown = json.loads(as_json.stdout)
    assert shown["status"] == "starting" and shown["operation"]["id"] == OP


def test_image_import_from_a_url_follows_its_operation(cli: Harness) -> None:
    image = {"id": "img-00000000000b", "name": "deb", "format": "qcow2"}
    pull = operation(OP, type="image.import", resource_id="img-00000000000b", progress=0)
    cli.api.on("POST", "/images", accepted({**image, "status": "downloading"}, pull))
    cli.api.on(
        "GET",
        f"/operations/{OP}/wait",
        ok({**pull, "progress": 50, "message": "1.0 MiB downloaded"}),
        ok(operation(OP, "succeeded", type="image.import", result={"image_id": image["id"]})),
    )
    cli.api.on("GET", "/images/img-00000000000b", ok({**image, "status": "available"}))
    result = cli.run(
        "image", "import", "deb", "--url", "https://example.org/deb.qcow2", "--json", env=AUTH_ENV
    )

    assert result.exit_code == 0, result.output
    assert json_body(cli.api.requests[0]) == {
        "name": "deb",
        "format": "qcow2",
        "url": "https://example.org/deb.qcow2",
        "wait": False,
    }
    assert cli.api.paths()[1:] == [
        f"GET /api/v1/operations/{OP}/wait",
        f"GET /api/v1/operations/{OP}/wait",
        "GET /api/v1/images/img-00000000000b",
    ]
    assert json.loads(result.stdout)["status"] == "available"


def test_a_failed_url_import_exits_with_its_error(cli: Harness) -> None:
    pull = operation(OP, type="image.import", resource_id="img-00000000000b")
    cli.api.on("POST", "/images", accepted({"id": "img-00000000000b"}, pull))
    failed = {"code": "VALIDATION_ERROR", "message": "the download failed (ConnectError)"}
    cli.api.on(
        "GET",
        f"/operations/{OP}/wait",
        ok(operation(OP, "failed", type="image.import", error=failed)),
    )
    result = cli.run("image", "import", "deb", "--url", "https://x.test/deb.qcow2", env=AUTH_ENV)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.strip() == (
        f"Error: VALIDATION_ERROR: the download failed (ConnectError) (operation: {OP})"
    )


def test_image_import_as_the_default_waits_at_the_server(cli: Harness) -> None:
    cli.api.on("POST", "/images", ok({"id": "img-00000000000b", "name": "deb"}, status=201))
    result = cli.run(
        "image", "import", "deb", "--url", "https://x.test/deb.qcow2", "--default", "-q",
        env=AUTH_ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json_body(cli.api.last) == {
        "name": "deb",
        "format": "qcow2",
        "url": "https://x.test/deb.qcow2",
        "default": True,
    }
    assert result.stdout.strip() == "img-00000000000b"


def test_the_operation_bar_shows_percent_and_message_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from voidvm.cli._output import Output

    shown, hidden = Output(), Output(quiet=True)
    screens = [io.StringIO(), io.StringIO()]
    for output, screen in zip((shown, hidden), screens, strict=True):
        output.err = Console(file=screen, force_terminal=True, width=80)
        with output.operation("Importing deb") as update:
            update(operation(OP, progress=None, message="starting"))
            update(operation(OP, progress=42, message="12.5 MiB downloaded"))
    assert "Importing deb" in screens[0].getvalue()
    assert "42% 12.5 MiB downloaded" in screens[0].getvalue()
    assert screens[1].getvalue() == ""


def test_human_age() -> None:
    from datetime import UTC, datetime

    from voidvm.cli._output import human_age

    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert human_age("2026-12-01T11:59:15Z", now) == "45s"
    assert human_age("2026-12-01T11:48:00Z", now) == "12m"
    assert human_age("2026-12-01T09:00:00Z", now) == "3h"
    assert human_age("2026-11-26T12:00:00Z", now) == "5d"
    assert human_age(None, now) == "-"
