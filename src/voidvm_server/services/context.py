"""Per-request context (request id, client address, user) carried by contextvars.

Set by the HTTP middleware; read by the audit log and the log formatter.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
client_ip: ContextVar[str | None] = ContextVar("client_ip", default=None)
user_name: ContextVar[str | None] = ContextVar("user_name", default=None)
vm_id: ContextVar[str | None] = ContextVar("vm_id", default=None)
