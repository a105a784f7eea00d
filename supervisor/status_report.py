"""What `gatewayctl status | workers | backends` report, read from the supervisor's state.

Pure reads of the live Supervisor (worker handles, their last heartbeats, the prober's
verdicts, reload history); it never changes anything.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from gateway.lifecycle import WorkerState
from gateway.metrics import families as fam
from gateway.version import VERSION

if TYPE_CHECKING:
    from supervisor.main import Supervisor


def status_line(sup: Supervisor) -> str:
    ready = sum(1 for w in sup.current() if w.state is WorkerState.READY)
    return f"generation {sup.generation}: {ready}/{len(sup.plan.cpus)} workers ready"


def status(sup: Supervisor) -> dict[str, Any]:
    now = time.monotonic()
    cur = sup.current()
    return {
        "version": VERSION,
        "state": sup.state,
        "pid": os.getpid(),
        "generation": sup.generation,
        "config_path": sup.config_path,
        "config_hash": sup.plan.config_hash,
        "uptime_s": round(now - sup.started_at, 1),
        "workers_ready": sum(1 for w in cur if w.state is WorkerState.READY),
        "workers_total": len(sup.plan.cpus) - len(sup.vacant_slots),
        "workers_draining": sum(1 for w in sup.workers if w.state is WorkerState.DRAINING),
        "vacant_slots": sorted(sup.vacant_slots),
        "crash_loop_slots": sorted(s for s, b in sup.backoff.items() if b.in_crash_loop(now)),
        "worker_restarts": sup.worker_restarts,
        "zygote": sup.zygote.status(),
        **merged_totals(sup),
        "reloads": dict(sup.reloads),
        "last_reload": sup.last_reload,
    }


def worker_rows(sup: Supervisor) -> list[dict[str, Any]]:
    now = time.monotonic()
    rows = []
    for w in sorted(sup.workers, key=lambda w: (w.slot, w.generation, w.pid)):
        hb = w.last_heartbeat
        rows.append(
            {
                "id": w.slot,
                "pid": w.pid,
                "cpu": w.cpu,
                "generation": w.generation,
                "state": w.state.value,
                "uptime_s": round(now - w.started_at, 1),
                "active_connections": hb.active_connections if hb else 0,
                "handled_connections": hb.handled_connections if hb else 0,
                "handled_requests": hb.handled_requests if hb else 0,
            }
        )
    return rows


def backend_rows(sup: Supervisor) -> list[dict[str, Any]]:
    """Per listener and backend: merged figures of the current workers."""
    figures: dict[tuple[str, str], dict[str, Any]] = {}
    for w in sup.current():
        hb = w.last_heartbeat
        for f in hb.backends if hb else []:
            row = figures.setdefault(
                (f.listener, f.backend_id),
                {"active_connections": 0, "failures": 0, "ejected_until_s": 0.0},
            )
            row["active_connections"] += f.active_connections
            row["failures"] = max(row["failures"], f.failures)
            row["ejected_until_s"] = max(row["ejected_until_s"], f.ejected_until_s)
    rows = []
    for lst in sup.plan.listeners:
        for b in lst.backends:
            merged = figures.get(
                (lst.name, b.id),
                {"active_connections": 0, "failures": 0, "ejected_until_s": 0.0},
            )
            verdict = sup.prober.verdicts.get((lst.name, b.id))
            rows.append(
                {
                    "listener": lst.name,
                    "backend": b.id,
                    "weight": b.weight,
                    "health": verdict.state
                    if verdict
                    else ("unchecked" if lst.health is None else "unknown"),
                    "last_probe": verdict.last_result if verdict else "",
                    **merged,
                }
            )
    return rows


def merged_totals(sup: Supervisor) -> dict[str, int]:
    """Totals from the same merged metrics `/metrics` exports (all workers, all generations)."""
    merged = sup.aggregator.merged()
    counters = merged.counters
    gauges = merged.gauges
    return {
        "requests_total": sum(counters.get(fam.REQUESTS.name, {}).values()),
        "connections_total": sum(counters.get(fam.CONNECTIONS.name, {}).values()),
        "connections_active": sum(gauges.get(fam.CONNECTIONS_ACTIVE.name, {}).values()),
    }
