"""VoidVM's nftables table: passt's user may not open connections to this host or link-local.

passt connect()s from the host to whatever a guest sends packets to, and a guest that is root can
craft packets to any address, 127.0.0.1 included (`--no-map-gw` only stops passt's own mapping of
the gateway address). So every connection attempt, datagram and ping by passt's user to loopback,
link-local or any address of this host is refused at the output hook. The SSH forward still works:
there passt only answers connections (SYN-ACK, never a bare SYN) and forwards no UDP.

The rule matches packets, not connection-tracking state, so it holds where conntrack is off or
skipped (`notrack`). The table is VoidVM's alone and replaced as a whole: other tables are never
touched, and loading it twice leaves one copy.
"""

from __future__ import annotations

from voidvm_server.drivers.qemu.process import run_tool
from voidvm_server.errors import DriverError

TABLE = "voidvm"
LOOPBACK_AND_LINK_LOCAL_V4 = ("127.0.0.0/8", "169.254.0.0/16")
LOOPBACK_AND_LINK_LOCAL_V6 = ("::1", "fe80::/10")
NFT_TIMEOUT = 10.0


def ruleset(uid: int) -> str:
    """The whole table, as `nft -f` reads it. `table` + `delete table` first make the load
    idempotent (the table exists, then is dropped and rebuilt in the same transaction)."""
    v4 = ", ".join(LOOPBACK_AND_LINK_LOCAL_V4)
    v6 = ", ".join(LOOPBACK_AND_LINK_LOCAL_V6)
    return f"""\
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
	chain guest_output {{
		type filter hook output priority filter; policy accept;
		meta skuid {uid} ip daddr {{ {v4} }} goto refuse
		meta skuid {uid} ip6 daddr {{ {v6} }} goto refuse
		meta skuid {uid} fib daddr type local goto refuse
	}}
	chain refuse {{
		tcp flags & (syn | ack) == syn counter reject with tcp reset
		meta l4proto != tcp counter reject with icmpx admin-prohibited
	}}
}}
"""


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


async def install(uid: int, *, netns: str | None, nft: str = "nft") -> None:
    """Load the table into `netns` (None: the server's own namespace). Raises DriverError."""
    await run_tool(in_netns(netns, [nft, "-f", "-"]), timeout=NFT_TIMEOUT,
                   error="Could not load VoidVM's nftables table", stdin=ruleset(uid).encode())  # fmt: skip


async def is_installed(*, netns: str | None, nft: str = "nft") -> bool:
    try:
        await run_tool(in_netns(netns, [nft, "list", "table", "inet", TABLE]), timeout=NFT_TIMEOUT,
                       error="nft list failed")  # fmt: skip
    except (DriverError, OSError):
        return False
    return True
