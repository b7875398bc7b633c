"""EventRouter: one socket's event subscriptions, replay on resume, and strict id order.

Guarantees per socket:
- Events arrive in increasing `eventId` order, each at most once.
- A user sees events of their own VMs only; an admin sees all. `vm-status-all` = every VM visible.
- Resume: a subscribe with `lastEventId` (or the socket's `?lastEventId=`) first gets the events
  after that id from the database (services/event_log.py), across restarts. Clients re-subscribe
  to several topics at once after a reconnect, so the router waits until no subscribe has arrived
  for `settle` seconds (holding live events meanwhile, also while the database is read), then
  sends the union of the missed and held events in id order.
- If the kept events no longer reach back to `lastEventId` (pruned, or more than a resume sends),
  a `replay-gap` notice says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voidvm_server.auth.principal import Principal
from voidvm_server.events.bus import Event
from voidvm_server.services.event_log import REPLAY_LIMIT, EventLog

log = logging.getLogger(__name__)
EVENT_KINDS = frozenset({"vm-status", "system-event", "operation"})


class EventRouter:
    def __init__(
        self,
        log: EventLog,
        principal: Callable[[], Principal | None],
        push: Callable[[Event], None],
        on_gap: Callable[[int, int], None],
        *,
        settle: float = 0.05,
    ) -> None:
        self.log = log
        self._principal = principal
        self._push = push
        self._on_gap = on_gap
        self.settle = settle
        self.all_vms = False
        self.vm_ids: set[str] = set()
        self.system_events = False  # the `system-event` topic: system events of every visible VM
        self.operations = False  # the `operations` topic: every change of the user's operations
        self._sent_up_to = 0  # the highest event id handed to the socket
        self._resume_from: int | None = None  # set while a resume is settling
        self._held: list[Event] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._busy = 0  # subscribes being handled: no flush before they are in

    # -- the settle window -----------------------------------------------------------------------
    def hold(self) -> None:
        """A subscribe is being handled (it may await the database): keep a resume open."""
        self._busy += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def release(self) -> None:
        self._busy -= 1
        self._arm()

    def _arm(self) -> None:
        if self._resume_from is None or self._busy:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.settle, self._start_flush)

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(
        self, vm_id: str | None, last_event_id: int | None, *, system: bool = False, operations: bool = False
    ) -> None:
        """`vm_id` None means every visible VM; `system` the system events only; `operations` the
        user's operations only. The caller checked the user may see `vm_id`."""
        if operations:
            self.operations = True
        elif system:
            self.system_events = True
        elif vm_id is None:
            self.all_vms = True
        else:
            self.vm_ids.add(vm_id)
        if last_event_id is None:
            return  # live from now on
        if self._resume_from is None:
            self._resume_from = last_event_id
        else:
            self._resume_from = min(self._resume_from, last_event_id)
        self._arm()

    def unsubscribe(self, vm_id: str | None, *, system: bool = False, operations: bool = False) -> None:
        if operations:
            self.operations = False
        elif system:
            self.system_events = False
        elif vm_id is None:
            self.all_vms = False
        else:
            self.vm_ids.discard(vm_id)

    @property
    def active(self) -> bool:
        return self.all_vms or self.system_events or self.operations or bool(self.vm_ids)

    # -- delivery --------------------------------------------------------------------------------
    def matches(self, event: Event) -> bool:
        if event.kind not in EVENT_KINDS:
            return False
        principal = self._principal()
        if principal is None or not (principal.is_admin or event.owner_id == principal.id):
            return False
        if event.kind == "operation":
            return self.operations
        if self.system_events and event.kind == "system-event":
            return True
        return self.all_vms or event.vm_id in self.vm_ids

    def offer(self, event: Event) -> None:
        """A live event from the bus (called synchronously, in id order)."""
        if not self.matches(event):
            return
        if self._resume_from is not None:
            self._held.append(event)
        else:
            self._send(event)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush(), name="ws-resume")
        else:  # a resume is being read: this one goes after it
            self._arm()

    async def flush(self) -> None:
        """End a resume: send the missed events and those held meanwhile, in id order."""
        start = self._resume_from
        if start is None:
            return
        while True:
            try:
                missed = await self.log.since(start)  # the newest REPLAY_LIMIT after `start`
                oldest = await self.log.first_id()
                newest = missed[-1].id if missed else await self.log.last_id()
            except Exception:  # the database is away: say that nothing could be replayed
                log.warning("Reading the events to resume from %d failed", start, exc_info=True)
                missed, oldest, newest = [], 0, start
                self._on_gap(start + 1, start + 1)
            if self._resume_from is None or self._resume_from >= start:
                break
            start = self._resume_from  # a subscribe from further back came in meanwhile: read again
        # No await from here on: live events stay held until the missed ones are out.
        self._resume_from = None
        held, self._held = self._held, []
        if len(missed) >= REPLAY_LIMIT and missed[0].id > start + 1:
            self._on_gap(start + 1, missed[0].id - 1)  # more than one resume sends
        elif start > 0 and oldest > start + 1:  # 0 asks for all there is: nothing is missing
            self._on_gap(start + 1, oldest - 1)  # pruned (or before this database's first id)
        elif start > newest:
            self._on_gap(newest + 1, start)  # ids this database never handed out
        events = {e.id: e for e in missed if self.matches(e)}
        events.update((e.id, e) for e in held)
        for event_id in sorted(events):
            self._send(events[event_id])

    def _send(self, event: Event) -> None:
        if event.id <= self._sent_up_to:
            return
        self._sent_up_to = event.id
        self._push(event)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            self._flushing.cancel()
