"""The restart policy for crashed VMs: how long to wait before restarting, or why not to."""

from __future__ import annotations

import time
from collections import deque

from voidvm_server.services.live_config import RestartPolicy

MAX_RESTART_BACKOFF_SECONDS = 300.0


class CrashRestarts:
    """Remembers each VM's recent automatic restarts, to cap them within a window and back off."""

    def __init__(self) -> None:
        self._history: dict[str, deque[float]] = {}  # vm_id -> monotonic times of restarts

    def plan(self, vm_id: str, policy: RestartPolicy) -> tuple[float | None, str | None]:
        """(seconds to wait before restarting, None) or (None, why not) under `policy`."""
        if policy.mode != "on-crash":
            return None, None
        moment = time.monotonic()
        history = self._history.setdefault(vm_id, deque())
        while history and moment - history[0] > policy.window_seconds:
            history.popleft()
        if len(history) >= policy.max_restarts:
            return None, f"not restarted: {len(history)} automatic restarts within {policy.window_seconds:g}s"
        delay = min(policy.backoff_seconds * 2 ** len(history), MAX_RESTART_BACKOFF_SECONDS)
        history.append(moment)
        return delay, None

    def forget(self, vm_id: str) -> None:
        self._history.pop(vm_id, None)
