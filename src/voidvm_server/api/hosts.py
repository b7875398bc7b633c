"""Which `Host` names the server answers to: the defence against DNS rebinding.

A page on an attacker's site can make its own name resolve to 127.0.0.1 and then talk to VoidVM
from the victim's browser as a "same-origin" request. Such a request still names the attacker's
host in `Host` (and in `Origin`), so answering only to known names stops it. The names are
localhost, 127.0.0.1, [::1], a specific listen address and `allowed_hosts`; `*` in that list
answers to any name.
"""

from __future__ import annotations

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
        return name is not None and name in self.answered
