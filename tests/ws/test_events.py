"""/ws with the FakeDriver: subscriptions, vm-control, ownership, replay, the envelope."""

from __future__ import annotations

import asyncio

from tests.ws.conftest import Message, WsServer


def statuses(messages: list[Message], vm_id: str) -> list[str]:
    return [m["data"]["status"] for m in messages if m["type"] == "vm-status" and m["data"]["vmId"] == vm_id]


async def test_vm_control_start_pushes_starting_then_running_in_order(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "events-1")
    async with ws_fake.events(admin) as ws:
        ack = await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        assert ack["type"] == "subscribed"
        assert ack["data"]["topic"] == "vm-status" and ack["data"]["vmId"] == vm_id
        assert ack["timestamp"].endswith("Z")

        reply = await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        operation_id = reply["data"].pop("operationId")
        assert reply["data"] == {"vmId": vm_id, "action": "start", "status": "starting", "accepted": True}
        assert operation_id.startswith("op-")

        running = await ws.expect("vm-status", lambda m: m["data"]["status"] == "running")
        assert statuses(ws.seen, vm_id) == ["starting", "running"]
        starting = next(m for m in ws.seen if m["type"] == "vm-status")
        assert starting["id"] is None  # pushed events carry no request id
        assert starting["data"]["previous"] == "stopped"
        assert running["data"]["previous"] == "starting"
        assert running["data"]["eventId"] > starting["data"]["eventId"]
        assert running["data"]["cpu"] == 1 and running["data"]["memory"] == 256
        assert running["data"]["network"]["ip"] == "10.0.2.15"
        assert running["data"]["network"]["ports"] == {}  # the tiny guest serves no SSH


async def test_vm_control_answers_the_rest_error_codes(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "events-2")
    async with ws_fake.events(admin) as ws:
        stop = await ws.request("vm-control", {"vmId": vm_id, "action": "stop"}, "vm-control-response")
        assert stop["type"] == "error"
        assert stop["data"]["code"] == "VM_NOT_RUNNING" and stop["data"]["vmId"] == vm_id

        await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        await ws.expect("vm-status", lambda m: m["data"]["status"] == "running")
        again = await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        assert again["type"] == "error" and again["data"]["code"] == "VM_ALREADY_RUNNING"
        assert again["data"]["details"] == {"current_status": "running"}

        paused = await ws.request("vm-control", {"vmId": vm_id, "action": "pause"}, "vm-control-response")
        assert paused["data"]["status"] == "paused" and paused["data"]["accepted"] is False

        missing = await ws.request(
            "vm-control", {"vmId": "vm-nope", "action": "start"}, "vm-control-response"
        )
        assert missing["data"]["code"] == "VM_NOT_FOUND"


async def test_another_users_vm_answers_vm_not_found(ws_fake: WsServer, admin: str) -> None:
    theirs = await ws_fake.create_vm(admin, "admins-vm")
    alice = await ws_fake.create_user(admin, "alice")
    async with ws_fake.events(alice) as ws:
        for type, data, reply in [
            ("subscribe", {"topic": "vm-status", "vmId": theirs}, "subscribed"),
            ("subscribe", {"topic": "vm-metrics", "vmId": theirs, "interval": 1}, "subscribed"),
            ("vm-control", {"vmId": theirs, "action": "start"}, "vm-control-response"),
            ("terminal-connect", {"vmId": theirs, "type": "serial"}, "terminal-connected"),
        ]:
            answer = await ws.request(type, data, reply)
            assert answer["type"] == "error", type
            assert answer["data"]["code"] == "VM_NOT_FOUND", type
            assert answer["data"]["vmId"] == theirs
        pong = await ws.request("ping", {}, "pong")  # still open
        assert pong["type"] == "pong"
    vm = (
        await ws_fake.http.get(f"/api/v1/vms/{theirs}", headers={"Authorization": f"Bearer {admin}"})
    ).json()
    assert vm["data"]["status"] == "stopped"


async def test_users_receive_events_of_their_own_vms_only_and_admins_of_all(
    ws_fake: WsServer, admin: str
) -> None:
    alice = await ws_fake.create_user(admin, "alice")
    async with ws_fake.events(alice) as alice_ws, ws_fake.events(admin) as admin_ws:
        await alice_ws.request("subscribe", {"topic": "vm-status-all"}, "subscribed")
        await admin_ws.request("subscribe", {"topic": "vm-status-all"}, "subscribed")
        admins_vm = await ws_fake.create_vm(admin, "admins")
        alices_vm = await ws_fake.create_vm(alice, "alices")
        await admin_ws.expect(
            "vm-status", lambda m: m["data"]["vmId"] == alices_vm and m["data"]["status"] == "stopped"
        )
        await alice_ws.expect(
            "vm-status", lambda m: m["data"]["vmId"] == alices_vm and m["data"]["status"] == "stopped"
        )
        assert admins_vm in {m["data"]["vmId"] for m in admin_ws.seen if m["type"] == "vm-status"}
        assert all(m["data"].get("vmId") != admins_vm for m in alice_ws.seen)


async def test_system_events_say_what_happened_and_who_did_it(ws_fake: WsServer, admin: str) -> None:
    alice = await ws_fake.create_user(admin, "alice")
    vm_id = await ws_fake.create_vm(alice, "alices")
    async with ws_fake.events(alice) as ws:
        await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        event = await ws.expect("system-event", lambda m: m["data"]["event"] == "vm.started")
    assert event["data"]["vmId"] == vm_id
    assert event["data"]["actor"] == "alice"
    assert event["data"]["level"] == "info"
    assert "started by alice" in event["data"]["message"]
    user_id = (await ws_fake.http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {alice}"})).json()
    assert event["data"]["userId"] == user_id["data"]["id"]
    ids = [m["data"]["eventId"] for m in ws.seen if "eventId" in m.get("data", {})]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


async def test_the_system_event_topic_carries_system_events_only(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "system-only")
    async with ws_fake.events(admin) as ws:
        ack = await ws.request("subscribe", {"topic": "system-event"}, "subscribed")
        assert ack["data"]["topic"] == "system-event"
        await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        started = await ws.expect("system-event", lambda m: m["data"]["event"] == "vm.started")
        assert started["data"]["actor"] == "admin" and started["timestamp"].endswith("Z")
        await ws.request("unsubscribe", {"topic": "system-event"}, "unsubscribed")
        await ws.request("ping", {}, "pong")
    assert not [m for m in ws.seen if m["type"] == "vm-status"]


async def test_reconnect_with_last_event_id_receives_the_missed_transitions(
    ws_fake: WsServer, admin: str
) -> None:
    one = await ws_fake.create_vm(admin, "one")
    two = await ws_fake.create_vm(admin, "two")
    async with ws_fake.events(admin) as ws:
        await ws.request("subscribe", {"topic": "vm-status", "vmId": one}, "subscribed")
        await ws.request("vm-control", {"vmId": one, "action": "start"}, "vm-control-response")
        last_seen = (await ws.expect("vm-status", lambda m: m["data"]["status"] == "running"))["data"][
            "eventId"
        ]
    # While no socket is open: both VMs change state.
    for vm_id, action in [(one, "stop"), (two, "start")]:
        response = await ws_fake.http.post(
            f"/api/v1/vms/{vm_id}/{action}", headers={"Authorization": f"Bearer {admin}"}
        )
        assert response.status_code == 200, response.text
    async with ws_fake.events(admin) as ws:
        # As the SDK does: every topic re-subscribed at once with the last id seen.
        for vm_id in (one, two):
            await ws.send("subscribe", {"topic": "vm-status", "vmId": vm_id, "lastEventId": last_seen})
        await ws.expect("vm-status", lambda m: m["data"]["vmId"] == one and m["data"]["status"] == "stopped")
        await ws.expect("vm-status", lambda m: m["data"]["vmId"] == two and m["data"]["status"] == "running")
    assert statuses(ws.seen, one) == ["stopping", "stopped"]
    assert statuses(ws.seen, two) == ["starting", "running"]
    ids = [m["data"]["eventId"] for m in ws.seen if m["type"] in ("vm-status", "system-event")]
    assert ids == sorted(ids) and min(ids) > last_seen


async def test_last_event_id_on_the_url_resumes_every_subscription(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "url-resume")
    mark = await ws_fake.container.events.last_id()
    response = await ws_fake.http.post(
        f"/api/v1/vms/{vm_id}/start", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 200
    async with ws_fake.events(admin, f"&lastEventId={mark}") as ws:
        await ws.send("subscribe", {"topic": "vm-status-all"})
        await ws.expect("vm-status", lambda m: m["data"]["status"] == "running")
    assert statuses(ws.seen, vm_id) == ["starting", "running"]


async def test_a_resume_past_the_kept_events_reports_the_gap(ws_fake: WsServer, admin: str) -> None:
    events = ws_fake.container.events
    for _ in range(10):
        await events.publish("noise", {}, vm_id=None, owner_id=None)
    events.keep = 2
    await events.prune()  # as the hourly pruning does to the oldest beyond `keep`
    async with ws_fake.events(admin) as ws:
        await ws.send("subscribe", {"topic": "vm-status-all", "lastEventId": 1})
        gap = await ws.expect("system-event", lambda m: m["data"]["event"] == "replay-gap")
    assert gap["data"]["level"] == "warning" and gap["data"]["missedFrom"] == 2


async def test_unsubscribe_stops_the_pushes(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "unsub")
    async with ws_fake.events(admin) as ws, ws_fake.events(admin) as witness:
        await witness.request("subscribe", {"topic": "vm-status-all"}, "subscribed")
        await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        ack = await ws.request("unsubscribe", {"topic": "vm-status", "vmId": vm_id}, "unsubscribed")
        assert ack["data"] == {"topic": "vm-status", "vmId": vm_id}
        await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        await witness.expect("vm-status", lambda m: m["data"]["status"] == "running")
        pong = await ws.request("ping", {"n": 1}, "pong")  # everything queued before it has arrived
        assert pong["data"] == {"n": 1}
    assert statuses(ws.seen, vm_id) == []


async def test_vm_metrics_and_system_monitor_push_samples_until_unsubscribed(
    ws_fake: WsServer, admin: str
) -> None:
    vm_id = await ws_fake.create_vm(admin, "metrics")
    async with ws_fake.events(admin) as ws:
        ack = await ws.request(
            "subscribe", {"topic": "vm-metrics", "vmId": vm_id, "interval": 0.1}, "subscribed"
        )
        assert ack["data"]["interval"] == 1.0  # bounded below at 1 s
        sample = await ws.expect("vm-metrics")
        assert sample["data"]["vmId"] == vm_id and sample["data"]["status"] == "stopped"
        assert {"cpu_percent", "memory", "disk", "network", "uptime"} <= set(sample["data"])
        await ws.request("subscribe", {"topic": "system-monitor", "interval": 1}, "subscribed")
        host = await ws.expect("system-monitor")
        assert host["data"]["memory"]["total_mb"] > 0 and host["data"]["vms"]["total"] == 1
        await ws.request("unsubscribe", {"topic": "vm-metrics", "vmId": vm_id}, "unsubscribed")
        await ws.request("unsubscribe", {"topic": "system-monitor"}, "unsubscribed")
        count = len(ws.seen)
        await asyncio.sleep(1.5)  # longer than the interval: nothing may arrive (absence has no event)
        pong = await ws.request("ping", {}, "pong")
        assert [m["type"] for m in ws.seen[count:]] == ["pong"] and pong


async def test_the_operations_topic_pushes_every_change_of_the_users_own_operations(
    ws_fake: WsServer, admin: str
) -> None:
    bob = await ws_fake.create_user(admin, "bob-ops")
    vm_id = await ws_fake.create_vm(admin, "events-ops")
    async with ws_fake.events(admin) as ws, ws_fake.events(bob) as bobs:
        ack = await ws.request("subscribe", {"topic": "operations"}, "subscribed")
        assert ack["data"]["topic"] == "operations"
        await bobs.request("subscribe", {"topic": "operations"}, "subscribed")
        accepted = await ws_fake.http.post(
            f"/api/v1/vms/{vm_id}/start", json={"wait": False}, headers={"Authorization": f"Bearer {admin}"}
        )
        op_id = accepted.json()["operation"]["id"]
        done = await ws.expect("operation", lambda m: m["data"]["status"] == "succeeded")
        assert done["data"]["id"] == op_id and done["data"]["result"]["status"] == "running"
        changes = [m["data"]["status"] for m in ws.seen if m["type"] == "operation"]
        assert changes == ["running", "succeeded"]
        assert not any(m["type"] == "vm-status" for m in ws.seen)  # this topic carries operations only
        await bobs.request("ping", {}, "pong")
        assert not any(m["type"] == "operation" for m in bobs.seen)  # not bob's


async def test_every_entry_point_writes_one_audit_entry_per_action(ws_fake: WsServer, admin: str) -> None:
    vm_id = await ws_fake.create_vm(admin, "audited")
    headers = {"Authorization": f"Bearer {admin}"}
    async with ws_fake.events(admin) as ws:
        await ws.request("subscribe", {"topic": "vm-status", "vmId": vm_id}, "subscribed")
        await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        await ws.expect("vm-status", lambda m: m["data"]["status"] == "running")
        refused = await ws.request("vm-control", {"vmId": vm_id, "action": "start"}, "vm-control-response")
        assert refused["type"] == "error" and refused["data"]["code"] == "VM_ALREADY_RUNNING"
    stopped = await ws_fake.http.post(f"/api/v1/vms/{vm_id}/stop", headers=headers)
    assert stopped.status_code == 200

    async def entries(action: str) -> list[dict[str, object]]:
        answer = await ws_fake.http.get(f"/api/v1/logs?action={action}&limit=100", headers=headers)
        found: list[dict[str, object]] = [e for e in answer.json()["data"]["logs"] if e["target_id"] == vm_id]
        return found

    starts = await entries("vm.start")
    assert sorted(str(e["result"]) for e in starts) == ["failure", "success"]  # once each, not twice
    assert any(str(e["message"]).startswith("accepted as op-") for e in starts)
    assert [e["result"] for e in await entries("vm.stop")] == ["success"]
    assert [e["result"] for e in await entries("vm.create")] == ["success"]
