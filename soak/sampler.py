"""Sampling the gateway every few seconds: each process's RSS, USS, open fds, threads and
CPU time (psutil), and `/metrics` scraped and summed per family.

A sample is one JSON line: `{"t": seconds since start, "procs": [...], "metrics": {...},
"scrape_ok": bool}`. A failed scrape or a process that vanished mid-sample leaves a gap,
never ends the run. It must never act on the gateway.
"""

from __future__ import annotations

import http.client
import urllib.request
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "expressgateway_"
# Families kept from /metrics, summed over their label sets (reloads also by result).
KEPT = (
    "requests_total",
    "connections_total",
    "connections_active",
    "upstream_errors_total",
    "security_rejections_total",
    "worker_restarts_total",
    "backend_healthy",
    "backend_active_requests",
)


def _role(proc: psutil.Process, supervisor_pid: int) -> str:
    if proc.pid == supervisor_pid:
        return "supervisor"
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "other"
    if any("workers.main" in a for a in argv):
        return "worker"
    return "zygote" if any("workers.zygote" in a for a in argv) else "other"


def sample_processes(supervisor_pid: int) -> list[dict[str, Any]]:
    try:
        root = psutil.Process(supervisor_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    rows = []
    for p in procs:
        try:
            with p.oneshot():
                mem = p.memory_full_info()
                cpu = p.cpu_times()
                rows.append(
                    {
                        "pid": p.pid,
                        "role": _role(p, supervisor_pid),
                        "rss": mem.rss,
                        "uss": mem.uss,
                        "fds": p.num_fds(),
                        "threads": p.num_threads(),
                        "cpu_s": round(cpu.user + cpu.system, 3),
                    }
                )
        except psutil.Error:
            continue  # it exited between listing and reading: a gap, not a failure
    return rows


def scrape(admin_url: str, timeout_s: float = 3.0) -> dict[str, float] | None:
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"{admin_url}/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                name = s.name.removeprefix(PREFIX)
                if name == "reloads_total":
                    key = f"reloads_total.{s.labels.get('result', '')}"
                    out[key] = out.get(key, 0.0) + s.value
                elif name in KEPT:
                    out[name] = out.get(name, 0.0) + s.value
    except (OSError, http.client.HTTPException, ValueError):
        return None  # a gap in the series, not the end of the run
    return out


def take(supervisor_pid: int, admin_url: str, t_s: float) -> dict[str, Any]:
    metrics = scrape(admin_url)
    return {
        "t": round(t_s, 3),
        "procs": sample_processes(supervisor_pid),
        "metrics": metrics or {},
        "scrape_ok": metrics is not None,
    }
