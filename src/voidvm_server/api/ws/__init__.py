"""The WebSocket API: `/ws` (events, VM control, serial terminals) and the raw console/VNC streams.

Modules: `protocol` (wire format), `connection` (one /ws socket's state machine), `handlers`
(what each request does), `subscriptions` (event routing and replay), `rendering` (events as
messages), `samplers` (periodic topics), `terminal` (serial terminals), `raw` (byte streams),
`outbox` (bounded send queues), `deadline` (clients that stop reading are cut off), `throttle`
(message rate), `hub` (registry, limits, revocation), `guards` (Origin, credentials), `logfilter`
(no tokens in logs), `routes` (the endpoints).
"""

from voidvm_server.api.ws.hub import ConnectionHub

__all__ = ["ConnectionHub"]
