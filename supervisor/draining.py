"""Draining workers: the budget a generation gets, the Drain message, and the ladder after
its deadline (SIGTERM, then SIGKILL), plus the cap on generations draining at once.

Owns: when a draining worker is told to stop and how hard. Must never wait for a worker in
the caller's task (the ladder runs in the supervisor's nursery, so a reload or a drain
command returns as soon as the Drain messages are sent), and never drain a worker twice (one
already draining keeps the budget and the ladder it was given).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable

import structlog
import trio

from gateway.config.plan import GatewayPlan
from gateway.lifecycle import WorkerState
from gateway.metrics.supervisor_metrics import SupervisorMetrics
from supervisor.worker_handle import WorkerHandle

log = structlog.get_logger("expressgateway.supervisor")

STOP_GRACE_S = 2.0  # after a drain deadline, SIGTERM; this much later, SIGKILL


def drain_budget_s(plan: GatewayPlan) -> float:
    """The longest drain budget of the plan: the runtime's or a listener's own."""
    return (
        max(
            [plan.config.runtime.drain_timeout_ms]
            + [lst.drain_timeout_ms for lst in plan.listeners]
        )
        / 1000
    )


class DrainLadder:
    def __init__(self, metrics: SupervisorMetrics) -> None:
        self.metrics = metrics
        self.nursery: trio.Nursery | None = None  # the supervisor's; set when it runs

    async def drain(self, handles: Iterable[WorkerHandle], timeout_s: float) -> None:
        """Drain ``handles``; escalate to SIGTERM then SIGKILL past the deadline."""
        fresh = [h for h in handles if h.state is not WorkerState.DRAINING]
        async with trio.open_nursery() as sends:  # one worker not reading delays no other
            for h in fresh:
                sends.start_soon(h.drain, timeout_s)
        assert self.nursery is not None
        for h in fresh:
            self.nursery.start_soon(self._escalate, h, timeout_s)

    def cap(self, workers: Iterable[WorkerHandle], cap: int) -> None:
        """More than ``cap`` generations draining (0: no cap): the oldest stop now, as at
        the end of their budget; their escalation (SIGTERM, SIGKILL) still follows."""
        draining = [w for w in workers if w.state is WorkerState.DRAINING]
        generations = sorted({w.generation for w in draining})
        if not cap or len(generations) <= cap:
            return
        assert self.nursery is not None
        for generation in generations[: len(generations) - cap]:
            cut = [w for w in draining if w.generation == generation]
            log.warning(
                "drain_cut_short",
                generation=generation,
                pids=[w.pid for w in cut],
                reason="max_draining_generations",
                max_draining_generations=cap,
            )
            for w in cut:
                self.nursery.start_soon(w.stop)

    async def _escalate(self, h: WorkerHandle, timeout_s: float) -> None:
        started = trio.current_time()
        try:
            await _escalate_until_exit(h, timeout_s)
        finally:
            self.metrics.drain_finished(trio.current_time() - started)


async def _escalate_until_exit(h: WorkerHandle, timeout_s: float) -> None:
    with trio.move_on_after(timeout_s + STOP_GRACE_S):
        await h.exited.wait()
        return
    log.warning("worker_drain_overran", slot=h.slot, pid=h.pid, action="SIGTERM")
    h.kill(signal.SIGTERM)
    with trio.move_on_after(STOP_GRACE_S):
        await h.exited.wait()
        return
    log.warning("worker_drain_overran", slot=h.slot, pid=h.pid, action="SIGKILL")
    h.kill(signal.SIGKILL)
