"""Golden tests of the guest network's pure parts: passt's argv and VoidVM's nftables table."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydantic
import pytest

from voidvm_server.config import Settings
from voidvm_server.drivers.qemu.guest_firewall import ruleset
from voidvm_server.drivers.qemu.guest_network import GuestNetwork
from voidvm_server.drivers.qemu.passt import PasstFiles, passt_argv

RUN = Path("/var/lib/voidvm/vms/vm-0123456789ab")


def test_passt_as_root_in_the_hosts_namespace() -> None:
    argv = passt_argv(PasstFiles(RUN), binary="passt", fd=5, ssh_port=40022,
                      runas="voidvm-net", netns=None)  # fmt: skip
    assert argv == [
        "passt",
        "--fd", "5",
        "--pid", "/var/lib/voidvm/vms/vm-0123456789ab/passt.pid",
        "--log-file", "/var/lib/voidvm/vms/vm-0123456789ab/passt.log",
        "--quiet",
        "--no-map-gw",
        "--address", "10.0.2.15",
        "--netmask", "24",
        "--gateway", "10.0.2.2",
        "--udp-ports", "none",
        "--tcp-ports", "127.0.0.1/40022:22",
        "--runas", "voidvm-net",
    ]  # fmt: skip


def test_passt_in_a_network_namespace_without_ssh_forward_or_user() -> None:
    argv = passt_argv(PasstFiles(RUN), binary="/usr/bin/passt", fd=3, ssh_port=None,
                      runas=None, netns="voidvm-guests")  # fmt: skip
    assert argv[:5] == ["ip", "netns", "exec", "voidvm-guests", "/usr/bin/passt"]
    assert "--tcp-ports" not in argv and "--runas" not in argv
    assert argv[argv.index("--fd") + 1] == "3"


EXPECTED_TABLE = """\
table inet voidvm
delete table inet voidvm
table inet voidvm {
	chain guest_output {
		type filter hook output priority filter; policy accept;
		meta skuid 998 ip daddr { 127.0.0.0/8, 169.254.0.0/16 } goto refuse
		meta skuid 998 ip6 daddr { ::1, fe80::/10 } goto refuse
		meta skuid 998 fib daddr type local goto refuse
	}
	chain refuse {
		tcp flags & (syn | ack) == syn counter reject with tcp reset
		meta l4proto != tcp counter reject with icmpx admin-prohibited
	}
}
"""


def test_the_nftables_table_is_voidvms_own_and_replaced_whole() -> None:
    assert ruleset(998) == EXPECTED_TABLE


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft -c needs root and nft")
def test_nft_accepts_the_table() -> None:
    # --check parses and validates against the kernel without changing the ruleset.
    result = subprocess.run(["nft", "--check", "-f", "-"], input=ruleset(998), capture_output=True,
                            text=True, timeout=10)  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "../../etc", "-n", "a b", "x" * 65, ""])
def test_an_unsafe_namespace_name_is_refused(name: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings(guest_netns=name)


def test_a_plain_namespace_name_is_accepted() -> None:
    assert Settings(guest_netns="voidvm-guests_1.a").guest_netns == "voidvm-guests_1.a"
    assert Settings().guest_netns is None


async def test_without_passt_doctor_says_guests_get_the_restricted_network() -> None:
    network = GuestNetwork(passt_binary="/nonexistent/passt")
    assert "restricted (passt not installed)" in await network.describe()


@pytest.mark.skipif(shutil.which("passt") is None, reason="passt is not installed")
async def test_without_the_fence_guests_get_the_restricted_network_not_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voidvm_server.drivers.qemu import guest_network

    monkeypatch.setattr(guest_network.os, "geteuid", lambda: 1000)  # a server that is not root
    closed = GuestNetwork()
    await closed.prepare()
    link = await closed.connect("vm-0123456789ab", tmp_path, 22022)
    assert link.passt is None and link.qemu_end is None  # QEMU's restricted network: no way out
    assert "restricted" in await closed.describe()
    assert "NOT isolated" in await GuestNetwork(allow_unfenced=True).describe()  # the operator's choice


@pytest.mark.skipif(shutil.which("passt") is None, reason="passt is not installed")
async def test_a_start_is_refused_while_the_firewall_cannot_be_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voidvm_server.drivers.qemu import guest_firewall, guest_network
    from voidvm_server.errors import DriverError

    async def broken(uid: int, *, netns: str | None = None) -> None:
        raise DriverError("nft failed", details="no nf_tables")

    monkeypatch.setattr(guest_network.os, "geteuid", lambda: 0)
    monkeypatch.setattr(guest_network.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(guest_network, "_ensure_user", _fake_user)
    monkeypatch.setattr(guest_firewall, "install", broken)
    network = GuestNetwork()
    await network.prepare()  # the first load fails ...
    with pytest.raises(DriverError, match="firewall"):  # ... and no guest starts unfenced
        await network.connect("vm-0123456789ab", tmp_path, 22022)
    assert not list(tmp_path.iterdir())  # no passt was launched


async def _fake_user(user: str) -> tuple[int, int]:
    return 999, 999
