"""Prometheus metrics: request counters and latency (recorded by the middleware), and gauges
read live at scrape time (VMs by state, QEMU processes, sockets, per-VM CPU and memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "voidvm_http_requests_total", "HTTP requests", ["method", "route", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "voidvm_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "voidvm_rate_limited_total", "Requests refused by the rate limiter", registry=registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


Snapshot = Callable[[], dict[str, object]]


class LiveCollector(Collector):
    """Turns a snapshot function's answer into gauges at each scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot()
        by_state = GaugeMetricFamily("voidvm_vms", "VMs by state", labels=["state"])
        for state, count in dict(snap.get("vms_by_state", {})).items():  # type: ignore[call-overload]
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("voidvm_qemu_processes", "Running QEMU processes",
                                value=float(snap.get("qemu_processes", 0)))  # type: ignore[arg-type]  # fmt: skip
        yield GaugeMetricFamily("voidvm_websocket_connections", "Open WebSocket connections",
                                value=float(snap.get("websockets", 0)))  # type: ignore[arg-type]  # fmt: skip
        cpu = GaugeMetricFamily("voidvm_vm_cpu_percent", "QEMU process CPU use", labels=["vm"])
        mem = GaugeMetricFamily("voidvm_vm_memory_mb", "QEMU process resident memory", labels=["vm"])
        for vm_id, value in dict(snap.get("vm_cpu", {})).items():  # type: ignore[call-overload]
            cpu.add_metric([vm_id], value)
        for vm_id, value in dict(snap.get("vm_memory", {})).items():  # type: ignore[call-overload]
            mem.add_metric([vm_id], value)
        yield cpu
        yield mem
