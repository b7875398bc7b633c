"""Bus events as /ws messages, rendered once per event however many sockets receive them.

An event's message is the same for every socket that may see it (its `id` is null and its
`timestamp` is the moment the event was published), so `EventRenderer` encodes it once and hands
the same text to every socket. `vm-status` events carry the VM's size and network from the
publisher (`VMService`), so rendering never reads the database.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from voidvm_server.api.ws.protocol import encode
from voidvm_server.events.bus import Event

EMPTY: dict[str, Any] = {"cpu": None, "memory": None, "network": None}


def _timestamp(event: Event) -> str:
    return event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventRenderer:
    """Encoded messages of recent events, each rendered by the first socket that needs it."""

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._texts: OrderedDict[int, str] = OrderedDict()

    def text(self, event: Event) -> str:
        text = self._texts.get(event.id)
        if text is None:
            text = self._texts[event.id] = self._render(event)
            while len(self._texts) > self._capacity:
                self._texts.popitem(last=False)
        return text

    @staticmethod
    def _render(event: Event) -> str:
        data = {**event.data, "eventId": event.id}
        if event.kind == "vm-status" and event.vm_id is not None:
            data.setdefault("previous", None)
            data.setdefault("reason", None)
            for key, value in EMPTY.items():  # a deleted VM has no size or network any more
                data.setdefault(key, value)
        return encode({"type": event.kind, "data": data, "id": None, "timestamp": _timestamp(event)})

    def close(self) -> None:
        self._texts.clear()
