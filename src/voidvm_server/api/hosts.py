"""Which `Host` names the server answers to: the defence against DNS rebinding.

A page on an attacker's site can make its own name resolve to 127.0.0.1 and then talk to VoidVM
from the victim's browser as a "same-origin" request. Such a request still names the attacker's
host in `Host` (and in `Origin`), so answering only to known names stops it. The names are
localhost, the listen address and `allowed_hosts`; `*` in that list answers to any name. An IP
address in `Host` is always answered: no DNS answer is involved, so a browser sends it only to
the address it names, and a page at that origin is one this server (or its proxy) served.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def hostname(value: str) -> str | None:
    """The host part of a `Host` header or an Origin, lower case, without port or brackets;
    None when it is not a plain `host[:port]` (or `scheme://host[:port]`)."""
    text = value.strip()
    if "//" not in text:
        if any(c in text for c in "/?#@\\ \t"):
            return None
        text = f"//{text}"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts.hostname.rstrip(".") if parts.hostname else None


class HostPolicy:
    def __init__(self, answered: frozenset[str], *, any_host: bool) -> None:
        self.answered = answered
        self.any_host = any_host

    def allows(self, host_header: str | None) -> bool:
        """A request without `Host` (HTTP/1.0 tools) is not a browser's and is allowed."""
        if host_header is None or self.any_host:
            return True
        name = hostname(host_header)
        return name is not None and (name in self.answered or _is_ip_address(name))

    def allows_origin(self, origin_host: str, host_header: str | None) -> bool:
        """Whether a browser page from `origin_host` may open a WebSocket here: a name the server
        answers to, or the very IP address the request was sent to (a LAN user's page served by
        this server). An IP address alone is not enough: a page at any IP address could name it."""
        request_host = hostname(host_header) if host_header else None
        if self.any_host or _is_ip_address(origin_host):
            return origin_host == request_host
        return origin_host in self.answered


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
