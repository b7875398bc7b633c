"""A guest reaches the outside as an outside machine would, and never this host (issue 12).

The VM's passt runs in a namespace pair the module makes (tests/integration/netns.py), so nothing
a guest sends can leave this machine. The host side holds what a real VM host holds: the real API
served by uvicorn on 127.0.0.1, a loopback-only service and a service on every address; the
outside holds a web server and a metadata service on 169.254.169.254 (TCP and UDP). The tiny guest
boots once for the whole module; the last tests change its routing and then stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn

from tests.conftest import TCG_SCALE, Api, kill_all_vms, let_tiny_serve_ssh, make_settings, running_api
from tests.integration.conftest import (
    BOOT_TIMEOUT,
    READY_LINE,
    STOP_TIMEOUT,
    action,
    create_vm,
    get_vm,
    kill_qemus,
    poll,
    serial_run,
    wait_console,
    wait_gone,
)
from tests.integration.netns import (
    GATEWAY,
    HOST_ADDRESSES,
    METADATA,
    WEB_SERVER,
    IsolatedNetwork,
    Listener,
    exchange_in,
    isolated_network,
    listening_in,
    missing_reason,
    nft_in,
    socket_in,
)
from voidvm_server.drivers.qemu import guest_firewall
from voidvm_server.drivers.qemu.passt import PasstFiles

pytestmark = [pytest.mark.qemu, pytest.mark.asyncio(loop_scope="module")]
QEMU_GATEWAY = "10.0.2.2"  # where QEMU's user-mode network put the host: still a guest's first guess
NC = "nc -w 2"  # each attempt gives up after 2 s; all of one batch run at the same time


@dataclass
class Site:
    api: Api
    token: str
    vm_id: str
    net: IsolatedNetwork
    api_port: int
    loopback: Listener  # a host service bound to 127.0.0.1 only (PostgreSQL, Redis, ...)
    everywhere: Listener  # a host service bound to 0.0.0.0
    web: Listener  # outside
    metadata: Listener  # outside, 169.254.169.254
    metadata_udp: socket.socket  # outside, 169.254.169.254

    @property
    def run_dir(self) -> Path:
        return self.api.container.agent.driver.run_dir(self.vm_id)

    async def guest(self, command: str) -> str:
        return await serial_run(self.api, self.vm_id, command)

    def passt_pid(self) -> int:
        return int(PasstFiles(self.run_dir).pidfile.read_text())


def secret(name: str) -> bytes:
    return f"{name}-{secrets.token_hex(6)}\n".encode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(
    tmp_path_factory: pytest.TempPathFactory, tiny_image: tuple[Path, Path]
) -> AsyncIterator[Site]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    data_dir = tmp_path_factory.mktemp("isolation")
    with isolated_network() as net:
        settings = make_settings(data_dir, guest_netns=net.host, stop_timeout_seconds=STOP_TIMEOUT)
        async with contextlib.AsyncExitStack() as stack:
            api = await stack.enter_async_context(running_api(settings, None, tiny_image))
            stack.push_async_callback(kill_all_vms, api.container)
            stack.callback(kill_qemus, str(data_dir))
            page = b"HTTP/1.0 200 OK\r\n\r\n" + secret("outside")
            listeners = {
                "loopback": Listener("loopback", secret("loopback"), listening_in(net.host, "127.0.0.1")),
                "everywhere": Listener("everywhere", secret("everywhere"), listening_in(net.host, "0.0.0.0")),
                "web": Listener("web", page, listening_in(net.outside, WEB_SERVER)),
                "metadata": Listener("metadata", secret("metadata"), listening_in(net.outside, METADATA, 80)),
            }
            for listener in listeners.values():
                await listener.start()
                stack.push_async_callback(listener.close)
            metadata_udp = socket_in(net.outside, socket.SOCK_DGRAM)
            stack.callback(metadata_udp.close)
            metadata_udp.bind((METADATA, 53))
            metadata_udp.setblocking(False)

            # The real app on a socket of the host side, as `voidvm-server serve` would listen.
            api_socket = listening_in(net.host, "127.0.0.1")
            # log_config=None: uvicorn's own logging set-up would stop its loggers propagating,
            # for every later test of this process.
            config = uvicorn.Config(api.app, lifespan="off", log_config=None)
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve(sockets=[api_socket]))

            async def stop_serving() -> None:
                server.should_exit = True
                await asyncio.wait_for(serving, 10)
                api_socket.close()

            stack.push_async_callback(stop_serving)

            token = await api.login()
            await let_tiny_serve_ssh(api.container.db)  # test_the_ssh_forward_reaches_the_guest
            vm = await create_vm(api, token, "isolated")
            await action(api, token, vm["id"], "start")
            await wait_console(api, token, vm["id"], READY_LINE, timeout=BOOT_TIMEOUT)

            async def leased() -> bool:
                return "inet 10.0.2.15/24" in await serial_run(api, vm["id"], "ip -4 addr show eth0")

            await poll(leased, timeout=10 * TCG_SCALE, interval=0.5, what="the guest's DHCP lease")
            yield Site(api, token, vm["id"], net, int(api_socket.getsockname()[1]),
                       listeners["loopback"], listeners["everywhere"], listeners["web"],
                       listeners["metadata"], metadata_udp)  # fmt: skip


async def from_host(site: Site, address: str, port: int, send: bytes = b"") -> bytes:
    """What a program of the host (root, host side) gets from address:port."""
    return await exchange_in(site.net.host, address, port, send)


async def attempts_from_guest(site: Site, targets: list[tuple[str, int]]) -> str:
    """Try every address:port from the guest at once; each prints what it got and its end."""
    listed = " ".join(f"{address}:{port}" for address, port in targets)
    # One short loop: busybox's shell takes at most 1024 characters per line.
    output = await site.guest(
        f'for t in {listed}; do ( {NC} "${{t%:*}}" "${{t#*:}}" </dev/null; echo "[$t done]" ) & done; wait'
    )
    assert output.count(" done]") == len(targets), output  # every attempt ran to its end
    return output


def refusals(site: Site, *, tcp: bool) -> int:
    """Packets VoidVM's table has refused so far in the host side's namespace: TCP connection
    attempts, or everything else (datagrams, pings)."""
    listing = nft_in(site.net.host, "list", "table", "inet", guest_firewall.TABLE)
    [line] = [line for line in listing.splitlines()
              if "counter packets" in line and ("tcp reset" in line) == tcp]  # fmt: skip
    return int(line.split("counter packets ")[1].split()[0])


async def test_passt_runs_in_the_namespace_as_its_own_user_behind_the_table(site: Site) -> None:
    pid = site.passt_pid()
    uid = pwd.getpwnam("voidvm-net").pw_uid
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(uid)] * 4, status
    netns_inode = os.stat(f"/run/netns/{site.net.host}").st_ino
    assert os.readlink(f"/proc/{pid}/ns/net") == f"net:[{netns_inode}]"
    qemu = Path(f"/proc/{(site.run_dir / 'qemu.pid').read_text().strip()}/cmdline").read_bytes()
    assert b"stream,id=net0,server=off,addr.type=fd" in qemu and b"user,id=net0" not in qemu
    assert f"meta skuid {uid} " in nft_in(site.net.host, "list", "table", "inet", guest_firewall.TABLE)


async def test_the_ssh_forward_reaches_the_guest(site: Site) -> None:
    port = (await get_vm(site.api, site.token, site.vm_id))["ports"]["ssh"]
    greeting = secret("sshd")
    await site.guest(f"(echo {greeting.decode().strip()} | nc -l -p 22 > /tmp/ssh-in &); sleep 0.3")
    answer = await from_host(site, "127.0.0.1", port, send=b"hello-guest\n")
    assert answer == greeting
    assert await site.guest("cat /tmp/ssh-in") == "hello-guest"


async def test_the_guest_reaches_a_web_server_outside_from_the_hosts_address(site: Site) -> None:
    # busybox's static wget crashes in the C library's name lookup: nc speaks the HTTP instead.
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    page = await site.guest(f"{request} | {NC} {WEB_SERVER} {site.web.port}")
    assert page.replace("\r", "") == site.web.answer.decode().replace("\r", "").strip()
    assert site.web.peers and site.web.peers[-1] in HOST_ADDRESSES  # as an outside machine sees NAT


async def test_the_guest_never_reaches_the_api_or_any_service_of_this_host(site: Site) -> None:
    ports = (site.api_port, site.loopback.port, site.everywhere.port)
    addresses = (QEMU_GATEWAY, GATEWAY, *HOST_ADDRESSES, "127.0.0.1")
    before = refusals(site, tcp=True)
    output = await attempts_from_guest(site, [(a, p) for a in addresses for p in ports])
    for listener in (site.loopback, site.everywhere):
        assert listener.answer.decode().strip() not in output
        assert listener.peers == [], f"the guest reached {listener.name}: {listener.peers}"
    assert "HTTP/" not in output and "health" not in output
    assert refusals(site, tcp=True) > before  # the host's own addresses: refused by VoidVM's table
    # Controls: all of them answer this host's own programs, so only the guest is kept out.
    health = await from_host(site, "127.0.0.1", site.api_port,
                             send=b"GET /api/v1/health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")  # fmt: skip
    assert health.startswith(b"HTTP/1.1 200"), health[:200]
    assert await from_host(site, "127.0.0.1", site.loopback.port) == site.loopback.answer
    assert await from_host(site, HOST_ADDRESSES[1], site.everywhere.port) == site.everywhere.answer


async def test_the_guest_never_reaches_link_local_metadata(site: Site) -> None:
    tcp_before, udp_before = refusals(site, tcp=True), refusals(site, tcp=False)
    # busybox's nc has no UDP mode; its tftp client sends one datagram to the port it is given.
    output = await site.guest(
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {NC} {METADATA} 80; "
        f"timeout 3 tftp -g -r probe -l /tmp/probe {METADATA} 53; echo tried"
    )
    assert output.endswith("tried"), output
    assert site.metadata.answer.decode().strip() not in output
    assert site.metadata.peers == []
    with pytest.raises(BlockingIOError):
        site.metadata_udp.recvfrom(512)  # no datagram arrived
    assert refusals(site, tcp=True) > tcp_before and refusals(site, tcp=False) > udp_before
    # Controls: the metadata service answers this host's own programs on both protocols.
    assert await from_host(site, METADATA, 80) == site.metadata.answer
    probe = socket_in(site.net.host, socket.SOCK_DGRAM)
    with probe:
        probe.sendto(b"control", (METADATA, 53))
    loop = asyncio.get_running_loop()
    data, _ = await asyncio.wait_for(loop.sock_recvfrom(site.metadata_udp, 512), 5)
    assert data == b"control"


async def test_a_root_guest_routing_loopback_out_reaches_nothing(site: Site) -> None:
    """A guest that is root can put 127.0.0.1 on its wire. Debian 12's passt then connect()ed to
    this host's 127.0.0.1, and only VoidVM's table stood in the way; the passt VoidVM builds drops
    such packets itself, as the control without the table shows, and the table stays behind it."""
    await site.guest(
        "for f in all eth0; do echo 1 > /proc/sys/net/ipv4/conf/$f/route_localnet; done; "
        "ip route del local 127.0.0.0/8 dev lo table local; "
        "ip route del local 127.0.0.1 dev lo table local; "
        f"ip route add 127.0.0.0/8 via {QEMU_GATEWAY} dev eth0"
    )
    assert "dev eth0" in await site.guest("ip route get 127.0.0.1")
    targets = [("127.0.0.1", site.loopback.port), ("127.0.0.1", site.api_port)]
    seen = len(site.loopback.peers)
    await attempts_from_guest(site, targets)
    assert len(site.loopback.peers) == seen, "the guest reached a loopback-only service"

    nft_in(site.net.host, "delete", "table", "inet", guest_firewall.TABLE)
    try:
        output = await attempts_from_guest(site, targets)
        await asyncio.sleep(1)  # a connection passt had made would be recorded by now
        assert len(site.loopback.peers) == seen, "passt forwarded a guest's packet to the host's loopback"
        assert output.count("timed out") == len(targets), output  # dropped, not even refused
    finally:
        await guest_firewall.install(pwd.getpwnam("voidvm-net").pw_uid, netns=site.net.host)


async def test_killing_the_vm_ends_its_passt(site: Site) -> None:
    pid = site.passt_pid()
    stopped = await action(site.api, site.token, site.vm_id, "stop", force=True)
    assert stopped["data"]["status"] == "stopped"
    assert stopped["data"]["ports"] == {}
    await wait_gone(pid, timeout=5)
