"""Waiting for a VM to reach a status by polling; the clock logic both flavours share."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from .._errors import VoidVMError, WaitTimeoutError
from .._models import VM

__all__ = ["StatusWait"]


@dataclass
class StatusWait:
    vm_id: str
    targets: frozenset[str]
    fail_on: frozenset[str]
    timeout: float
    interval: float
    started: float

    @classmethod
    def start(
        cls,
        vm_id: str,
        status: str | Iterable[str],
        *,
        timeout: float,
        interval: float,
        fail_on: Iterable[str],
    ) -> StatusWait:
        targets = frozenset([status] if isinstance(status, str) else status)
        if not targets:
            raise ValueError("wait_for needs at least one target status")
        return cls(
            vm_id=vm_id,
            targets=targets,
            fail_on=frozenset(fail_on) - targets,
            timeout=timeout,
            interval=interval,
            started=time.monotonic(),
        )

    def reached(self, vm: VM) -> bool:
        """True when ``vm`` is in a target status; raises if it is in a failure status."""
        status = vm.get("status")
        if status in self.targets:
            return True
        if status in self.fail_on:
            reason = vm.get("status_reason") or "no reason given"
            raise VoidVMError(
                f"VM {self.vm_id} entered status {status!r} while waiting for "
                f"{'/'.join(sorted(self.targets))}: {reason}",
                code="VM_ERROR",
                details={"vm": dict(vm)},
            )
        return False

    def next_sleep(self, last_status: object) -> float:
        """Seconds to sleep before the next poll; raises once the deadline has passed."""
        remaining = self.timeout - (time.monotonic() - self.started)
        if remaining <= 0:
            raise WaitTimeoutError(
                f"VM {self.vm_id} did not reach {'/'.join(sorted(self.targets))} within "
                f"{self.timeout:g}s (last status {last_status!r})"
            )
        return min(self.interval, remaining)
