"""Supervisor-side metric values: worker lifecycle, reloads, drains, health, kernel counters.

The supervisor mutates one `SupervisorMetrics`; the exporter folds its `snapshot()` into
the aggregator like one more (never-retiring) source. It must never do I/O, read a clock
(callers pass measured durations) or read BPF maps itself (callers pass the totals).
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.metrics import families as fam
from gateway.metrics.snapshot import (
    HistogramValue,
    Labels,
    MetricsSnapshot,
    copy_histogram,
    new_histogram,
    observe,
)


class SupervisorMetrics:
    def __init__(self, version: str) -> None:
        self.version = version
        self.worker_restarts = 0
        self.workers_by_state: dict[str, int] = {}
        self.reloads: dict[Labels, int] = {}
        self.drain_duration: HistogramValue = new_histogram(fam.DRAIN_DURATION.buckets)
        self.backend_healthy: dict[Labels, int] = {}
        self.kernel_packets: dict[Labels, int] = {}
        self._kernel_raw: dict[Labels, int] = {}
        self._kernel_base: dict[Labels, int] = {}

    def worker_restarted(self) -> None:
        self.worker_restarts += 1

    def set_workers(self, counts_by_state: Mapping[str, int]) -> None:
        """Replace the per-state worker counts (e.g. {"ready": 2, "draining": 2})."""
        self.workers_by_state = dict(counts_by_state)

    def reload_finished(self, result: str) -> None:
        """`result` is a short fixed word: "success", "failed", "rejected", ..."""
        key = (result,)
        self.reloads[key] = self.reloads.get(key, 0) + 1

    def drain_finished(self, duration_s: float) -> None:
        observe(self.drain_duration, fam.DRAIN_DURATION.buckets, duration_s)

    def set_backend_health(self, listener: str, backend: str, healthy: bool) -> None:
        self.backend_healthy[(listener, backend)] = 1 if healthy else 0

    def forget_backend(self, listener: str, backend: str) -> None:
        """A reload removed the backend: stop exporting its health gauge."""
        self.backend_healthy.pop((listener, backend), None)

    def set_kernel_packets(self, cpu: int, reason: str, total: int) -> None:
        """Absolute total read from the datapath's per-CPU counters. If the maps were
        recreated and the total fell, the old total is kept as a base so the exported
        counter stays monotonic."""
        key = (str(cpu), reason)
        last = self._kernel_raw.get(key, 0)
        if total < last:
            self._kernel_base[key] = self._kernel_base.get(key, 0) + last
        self._kernel_raw[key] = total
        self.kernel_packets[key] = self._kernel_base.get(key, 0) + total

    def snapshot(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            counters={
                fam.WORKER_RESTARTS.name: {(): self.worker_restarts},
                fam.RELOADS.name: dict(self.reloads),
                fam.KERNEL_PACKETS.name: dict(self.kernel_packets),
            },
            gauges={
                fam.WORKERS.name: {(state,): n for state, n in self.workers_by_state.items()},
                fam.BACKEND_HEALTHY.name: dict(self.backend_healthy),
                fam.BUILD_INFO.name: {(self.version,): 1},
            },
            histograms={fam.DRAIN_DURATION.name: {(): copy_histogram(self.drain_duration)}},
        )
