"""The WebSocket parts on their own: tickets, throttle, Origin rules, parsing, event routing,
send deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from starlette.websockets import WebSocket, WebSocketState

from tests.conftest import FakeClock
from voidvm_server.api.hosts import HostPolicy
from voidvm_server.api.ws import deadline, protocol
from voidvm_server.api.ws.guards import origin_allowed
from voidvm_server.api.ws.logfilter import redact
from voidvm_server.api.ws.subscriptions import EventRouter
from voidvm_server.api.ws.throttle import MessageThrottle
from voidvm_server.auth.principal import Grant
from voidvm_server.errors import AuthError
from voidvm_server.events.bus import Event, EventBus
from voidvm_server.persistence.engine import Database
from voidvm_server.services.event_log import REPLAY_LIMIT, EventLog
from voidvm_server.services.system_events import describe
from voidvm_server.services.tickets import TicketService

GRANT = Grant("usr-a", 1, "session-a", None, None)


@pytest.fixture
async def tickets(database_url: str) -> AsyncIterator[tuple[TicketService, FakeClock]]:
    db = Database(database_url)
    await db.migrate()
    clock = FakeClock(100.0)
    try:
        yield TicketService(db, 30, clock), clock
    finally:
        await db.close()


async def test_a_ticket_is_single_use_and_bound_to_its_vm_and_kind(
    tickets: tuple[TicketService, FakeClock],
) -> None:
    service, _ = tickets
    secret = await service.issue(GRANT, "vm-1", "serial")
    for vm_id, kind in [("vm-2", "serial"), ("vm-1", "vnc")]:
        again = await service.issue(GRANT, "vm-1", "serial")
        with pytest.raises(AuthError):
            await service.redeem(again, vm_id, kind)  # type: ignore[arg-type]
    ticket = await service.redeem(secret, "vm-1", "serial")
    assert ticket.grant == GRANT and ticket.vm_id == "vm-1"
    with pytest.raises(AuthError) as used:
        await service.redeem(secret, "vm-1", "serial")
    assert used.value.code == "INVALID_TICKET"


async def test_a_ticket_is_stored_as_its_digest_only(tickets: tuple[TicketService, FakeClock]) -> None:
    service, _ = tickets
    secret = await service.issue(GRANT, "vm-1", "serial")
    async with service.db.reading() as s:
        rows = (await s.execute(text("SELECT * FROM console_tickets"))).all()
    assert len(rows) == 1 and all(secret not in str(value) for value in rows[0])


async def test_parallel_redeems_of_one_ticket_open_one_stream(
    tickets: tuple[TicketService, FakeClock],
) -> None:
    service, _ = tickets
    secret = await service.issue(GRANT, "vm-1", "vnc")
    results = await asyncio.gather(
        *(service.redeem(secret, "vm-1", "vnc") for _ in range(8)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AuthError) for r in results if isinstance(r, BaseException))


async def test_a_ticket_expires_after_its_ttl(tickets: tuple[TicketService, FakeClock]) -> None:
    service, clock = tickets
    secret = await service.issue(GRANT, "vm-1", "vnc")
    clock.now += 30.5
    with pytest.raises(AuthError):
        await service.redeem(secret, "vm-1", "vnc")
    await service.issue(GRANT, "vm-1", "vnc")
    await service.issue(GRANT, "vm-1", "vnc")
    clock.now += 31
    await service.issue(GRANT, "vm-1", "vnc")
    assert await service.count() == 1  # expired ones are swept


def test_the_throttle_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock(100.0)
    throttle = MessageThrottle(50, clock=clock)
    assert sum(throttle.allow() for _ in range(80)) == 50
    assert throttle.should_warn() and not throttle.should_warn()
    clock.now += 0.25  # refills 12.5 messages
    assert sum(throttle.allow() for _ in range(80)) == 12
    clock.now += 1.0
    assert throttle.should_warn()


DEFAULT_HOSTS = HostPolicy(frozenset({"localhost", "127.0.0.1", "::1", "vvm.lan"}), any_host=False)


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "localhost:3000", [], True),  # not a browser
        ("http://localhost:3000", "localhost:3000", [], True),
        ("http://localhost:5173", "localhost:3000", [], True),  # an answered host, another port
        ("http://vvm.lan", "localhost:3000", [], True),  # a configured name
        ("https://evil.example", "localhost:3000", [], False),
        ("https://app.example", "localhost:3000", ["https://app.example/"], True),
        ("https://evil.example", "localhost:3000", ["*"], True),
        ("null", "localhost:3000", [], False),
        ("http://[::1]:8080", "[::1]:3000", [], True),
        # DNS rebinding: the page's own name, in Origin and Host alike, is still refused
        ("http://rebind.example:3000", "rebind.example:3000", [], False),
        # A LAN user's page served from the address they connect to; but not any address's page
        ("http://192.168.1.5:3000", "192.168.1.5:3000", [], True),
        ("http://192.0.2.66", "127.0.0.1:3000", [], False),
        ("http://192.0.2.66", "localhost:3000", [], False),
    ],
)
def test_origin_rules(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, DEFAULT_HOSTS, allowed) is ok


def test_origin_must_match_the_host_only_when_any_host_is_answered() -> None:
    anything = HostPolicy(frozenset(), any_host=True)
    assert origin_allowed("http://box.example:8080", "box.example:3000", anything, [])
    assert not origin_allowed("http://evil.example", "box.example:3000", anything, [])


def test_secrets_in_urls_are_redacted() -> None:
    line = '127.0.0.1 - "WebSocket /ws?token=eyJhbGc.x.y&lastEventId=4" [accepted]'
    assert redact(line) == '127.0.0.1 - "WebSocket /ws?token=[redacted]&lastEventId=4" [accepted]'
    assert redact("/api/v1/vms/vm-1/vnc?ticket=abc") == "/api/v1/vms/vm-1/vnc?ticket=[redacted]"


def test_parse_validates_each_type_and_bounds_intervals() -> None:
    envelope, data = protocol.parse(
        '{"type": "subscribe", "data": {"topic": "system-monitor", "interval": 0.2}}'
    )
    assert envelope.id is None and isinstance(data, protocol.SubscribeData) and data.period == 1.0
    _, default = protocol.parse('{"type": "subscribe", "data": {"topic": "vm-status-all"}, "id": 7}')
    assert isinstance(default, protocol.SubscribeData) and default.period == protocol.DEFAULT_INTERVAL
    with pytest.raises(protocol.ProtocolError) as bad:
        protocol.parse('{"type": "terminal-resize", "data": {"vmId": "vm-1", "cols": 0, "rows": 24}}')
    assert bad.value.code == "VALIDATION_ERROR" and bad.value.details[0]["field"] == "data.cols"
    assert protocol.peek_id('{"type": 1, "id": "abc"}') == "abc"
    assert protocol.peek_id("garbage") is None


def test_lifecycle_names() -> None:
    assert describe({"previous": "starting", "status": "running"}) == "vm.started"
    assert describe({"previous": "rebooting", "status": "running"}) == "vm.restarted"
    assert describe({"previous": "stopped", "status": "starting"}) is None
    assert describe({"previous": "running", "status": "error"}) == "vm.error"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    await db.migrate()
    yield EventLog(db, EventBus())
    await db.close()


def _router(
    log: EventLog, sent: list[Event], gaps: list[tuple[int, int]], admin: bool = False
) -> EventRouter:
    principal: Any = SimpleNamespace(id="usr-a", is_admin=admin)
    return EventRouter(log, lambda: principal, sent.append, lambda a, b: gaps.append((a, b)), settle=0.01)


async def _status(log: EventLog, vm_id: str, owner: str, status: str) -> Event:
    return await log.publish("vm-status", {"vmId": vm_id, "status": status}, vm_id=vm_id, owner_id=owner)


async def test_a_resume_over_several_topics_sends_the_union_in_id_order(log: EventLog) -> None:
    sent: list[Event] = []
    gaps: list[tuple[int, int]] = []
    router = _router(log, sent, gaps)
    log.bus.listen(router.offer)
    for status in ("starting", "running"):
        await _status(log, "vm-1", "usr-a", status)
        await _status(log, "vm-2", "usr-a", status)
        await _status(log, "vm-3", "usr-b", status)  # someone else's
    router.subscribe("vm-1", 0)
    router.subscribe("vm-2", 0)
    router.subscribe("vm-3", 0)  # (the route would have refused it; the owner filter still holds)
    live = await _status(log, "vm-1", "usr-a", "stopping")  # arrives while the resume settles
    await asyncio.sleep(0.1)
    base = live.id - 7  # ids go on from the clock-based ones of earlier versions
    assert [e.id - base for e in sent] == [1, 2, 4, 5, 7]
    assert gaps == []
    await _status(log, "vm-2", "usr-a", "stopping")
    assert sent[-1].vm_id == "vm-2"  # live again


async def test_a_resume_reports_ids_that_were_pruned_or_never_handed_out(log: EventLog) -> None:
    sent: list[Event] = []
    gaps: list[tuple[int, int]] = []
    router = _router(log, sent, gaps, admin=True)
    ids = [(await _status(log, "vm-1", "usr-z", f"s{n}")).id for n in range(10)]
    log.keep = 4
    assert await log.prune() == 6
    router.subscribe(None, ids[1])
    await router.flush()
    assert gaps == [(ids[2], ids[5])] and [e.id for e in sent] == ids[6:]
    router.subscribe(None, ids[-1] + 40)  # an id of another database
    await router.flush()
    assert gaps[-1] == (ids[-1] + 1, ids[-1] + 40)


async def test_a_resume_sends_the_newest_events_it_missed_and_names_the_older_ones(log: EventLog) -> None:
    async with log.session() as s:
        ids = [(await log.add(s, "vm-status", {"vmId": "vm-1", "status": f"s{n}"}, vm_id="vm-1",
                              owner_id="usr-a")).id for n in range(REPLAY_LIMIT + 5)]  # fmt: skip
    sent: list[Event] = []
    gaps: list[tuple[int, int]] = []
    router = _router(log, sent, gaps)
    router.subscribe("vm-1", ids[0] - 1)
    await router.flush()
    assert gaps == [(ids[0], ids[4])]
    assert [e.id for e in sent] == ids[5:]


async def test_a_resume_from_further_back_that_comes_in_during_a_read_is_read_too(log: EventLog) -> None:
    ids = [(await _status(log, "vm-1", "usr-a", f"s{n}")).id for n in range(6)]
    sent: list[Event] = []
    router = _router(log, sent, [])
    since = log.since

    async def slow_since(last_id: int, limit: int = REPLAY_LIMIT) -> list[Event]:
        found = await since(last_id, limit)
        if last_id == ids[3]:
            router.subscribe("vm-1", ids[0])  # another topic's resume, from further back
        return found

    log.since = slow_since  # type: ignore[method-assign]
    router.subscribe("vm-1", ids[3])
    await router.flush()
    assert [e.id for e in sent] == ids[1:]


async def test_ids_keep_rising_across_a_restart_and_a_resume_reads_the_table(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    first = Database(url)
    await first.migrate()
    before = await _status(EventLog(first, EventBus()), "vm-1", "usr-a", "running")
    await first.close()
    again = Database(url)  # as the next server process opens it
    try:
        log = EventLog(again, EventBus())
        after = await _status(log, "vm-1", "usr-a", "stopped")
        assert after.id > before.id
        assert [e.data["status"] for e in await log.since(0)] == ["running", "stopped"]
    finally:
        await again.close()


async def test_an_event_that_carries_the_vm_fields_is_rendered_without_a_read() -> None:
    from voidvm_server.api.ws.rendering import EventRenderer

    renderer = EventRenderer()
    fields = {"cpu": 2, "memory": 512, "network": {"ip": None, "ports": {}}}
    event = Event(1, "vm-status", "vm-1", "u", {"vmId": "vm-1", "status": "stopped", **fields})

    text = renderer.text(event)
    assert '"cpu":2' in text and '"eventId":1' in text and '"previous":null' in text
    assert renderer.text(event) is text  # rendered once, shared


def socket_that(send: Any, aborts: list[str]) -> WebSocket:
    """A connected Starlette WebSocket over `send`, served with the abort extension."""
    scope = {"type": "websocket", "extensions": {deadline.ABORT: {"abort": aborts.append}}}
    websocket = WebSocket(scope, receive=asyncio.Event().wait, send=send)  # type: ignore[arg-type]
    websocket.application_state = WebSocketState.CONNECTED
    return websocket


async def _never(message: Any) -> None:
    await asyncio.Event().wait()  # a client that takes nothing: the write buffer stays full


async def test_a_send_past_its_deadline_aborts_the_connection() -> None:
    aborts: list[str] = []
    websocket = socket_that(_never, aborts)
    with pytest.raises(deadline.StalledClient):
        await deadline.send(websocket, "hello", 0.05)
    assert aborts == ["send deadline passed"]
    assert websocket.application_state is WebSocketState.DISCONNECTED
    await deadline.close(websocket, 1000, "bye", 0.05)  # nothing more to do: no second abort
    assert aborts == ["send deadline passed"]


async def test_a_close_that_cannot_be_written_aborts_the_connection() -> None:
    aborts: list[str] = []
    await deadline.close(socket_that(_never, aborts), 1013, "slow", 0.05)
    assert aborts == ["send deadline passed"]


async def test_a_close_that_is_written_still_has_to_complete_within_the_deadline() -> None:
    aborts: list[str] = []
    sent: list[Any] = []

    async def accepts(message: Any) -> None:
        sent.append(message)

    await deadline.close(socket_that(accepts, aborts), 1000, "bye", 0.05)
    assert sent == [{"type": "websocket.close", "code": 1000, "reason": "bye"}] and aborts == []
    async with asyncio.timeout(5):  # then it aborts, a no-op if the connection has ended by itself
        while not aborts:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert aborts == ["no close reply in time"]


async def test_closing_a_socket_whose_client_went_first_is_quiet() -> None:
    aborts: list[str] = []

    async def gone(message: Any) -> None:
        raise OSError("the client went first")  # what uvicorn raises (ClientDisconnected)

    await deadline.close(socket_that(gone, aborts), 1000, "bye", 0.05)
    assert aborts == []


async def test_a_failing_listener_never_reaches_the_writer_nor_the_other_listeners(log: EventLog) -> None:
    heard: list[int] = []

    def broken(event: Event) -> None:
        raise RuntimeError("a listener's bug")

    log.bus.listen(broken)
    log.bus.listen(lambda event: heard.append(event.id))
    event = await _status(log, "vm-1", "usr-a", "running")  # returns: the change is written
    assert heard == [event.id]
