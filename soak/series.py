"""From raw records to named time series: gateway samples and client lines in, `Series`
out, each with the line that is judged and the rule it is judged by.

Pure: records in memory in, series out. Client lines (one per second) are merged into
windows of the sample interval so every series shares one time axis; latency percentiles
come from merged histograms, not averaged percentiles. It must never judge or plot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from soak.latency_histogram import merge, percentile_s

Point = tuple[float, float]


@dataclass
class Series:
    name: str
    title: str
    unit: str
    lines: dict[str, list[Point]] = field(default_factory=dict)
    judged: str | None = None  # the label of the line a verdict is about
    rule: str | None = None  # a key of verdict.RULES, "errors", or None (shown, not judged)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "unit": self.unit,
            "judged": self.judged,
            "rule": self.rule,
            "lines": {k: [[round(t, 2), v] for t, v in pts] for k, pts in self.lines.items()},
        }


def _sum(procs: Sequence[Mapping[str, Any]], key: str, role: str | None = None) -> float:
    return float(sum(p[key] for p in procs if role is None or p["role"] == role))


def _outside(t: float, spans: Sequence[tuple[float, float]]) -> bool:
    return not any(start <= t <= end for start, end in spans)


def gateway_series(
    samples: Sequence[Mapping[str, Any]], replacing: Sequence[tuple[float, float]] = ()
) -> list[Series]:
    """`replacing`: the spans (seconds from the start) in which old and new workers are both
    alive. The judged line of the gateway's totals leaves them out: a drain's overlap is a
    step up and back, and where the last fault falls in the window must not decide a trend.
    A leak still shows there (it is held between faults too), and an old worker that
    outlives its fault is the fault's own failure (it waits until no worker drains)."""
    rows = [s for s in samples if s["procs"]]
    out = []
    for key, unit, title, rule in (
        ("rss", "bytes", "Gateway RSS", "bytes"),
        ("uss", "bytes", "Gateway USS (memory only its processes hold)", "bytes"),
        ("fds", "fds", "Gateway open file descriptors", "fds"),
        ("threads", "threads", "Gateway threads", "threads"),
    ):
        total = [(s["t"], _sum(s["procs"], key)) for s in rows]
        out.append(
            Series(
                f"gateway.{key}",
                f"{title}: all processes, judged outside worker replacements; supervisor, workers",
                unit,
                {
                    "all": total,
                    "all, between replacements": [p for p in total if _outside(p[0], replacing)],
                    "supervisor": [(s["t"], _sum(s["procs"], key, "supervisor")) for s in rows],
                    "workers": [(s["t"], _sum(s["procs"], key, "worker")) for s in rows],
                },
                "all, between replacements",
                rule,
            )
        )
    for key, unit in (("rss", "bytes"), ("fds", "fds")):
        out.append(
            Series(
                f"supervisor.{key}",
                f"Supervisor alone ({key}): the one process no fault replaces",
                unit,
                {"supervisor": [(s["t"], _sum(s["procs"], key, "supervisor")) for s in rows]},
                "supervisor",
                unit if unit == "fds" else "bytes",
            )
        )
    by_pid: dict[str, list[Point]] = {}
    for row in rows:
        for p in row["procs"]:
            if p["role"] == "worker":
                by_pid.setdefault(f"pid {p['pid']}", []).append((row["t"], float(p["rss"])))
    out.append(
        Series(
            "workers.rss_by_pid",
            "RSS of each worker over its life (faults replace workers: a leak shows as every "
            "life rising, not the total)",
            "bytes",
            by_pid,
        )
    )
    out.append(
        Series("gateway.cpu_percent", "Gateway CPU (% of one core)", "%", {"all": _cpu(rows)})
    )
    scraped = [s for s in samples if s["scrape_ok"]]
    out.append(
        Series(
            "metrics.connections_active",
            "Client connections open (/metrics)",
            "connections",
            {"open": [(s["t"], s["metrics"].get("connections_active", math.nan)) for s in scraped]},
            "open",
            "connections",
        )
    )
    out.append(
        Series(
            "metrics.upstream_errors",
            "Upstream errors counted by the gateway (/metrics, cumulative)",
            "errors",
            {"upstream errors": [(s["t"], s["metrics"].get("upstream_errors_total", 0.0)) for s in scraped]},
        )
    )  # fmt: skip
    return out


def _cpu(rows: Sequence[Mapping[str, Any]]) -> list[Point]:
    """CPU % between samples, per pid so a replaced worker does not read as negative."""
    points = []
    for prev, cur in itertools.pairwise(rows):
        before = {p["pid"]: p["cpu_s"] for p in prev["procs"]}
        used = sum(p["cpu_s"] - before.get(p["pid"], p["cpu_s"]) for p in cur["procs"])
        dt = cur["t"] - prev["t"]
        if dt > 0:
            points.append((cur["t"], 100 * used / dt))
    return points


@dataclass
class ClientWindow:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: list[Mapping[int, int]] = field(default_factory=list)
    cpu_s: float = 0.0


def client_windows(
    lines: Sequence[Mapping[str, Any]], t0_wall: float, interval_s: float
) -> dict[float, ClientWindow]:
    """Client lines merged into windows ending at k x interval_s after the start."""
    windows: dict[float, ClientWindow] = {}
    last_cpu = None
    for line in lines:
        t = line["t"] - t0_wall
        end = math.ceil(t / interval_s - 1e-9) * interval_s
        w = windows.setdefault(round(end, 3), ClientWindow())
        w.ok += line["ok"]
        for kind, n in line["err"].items():
            w.errors[kind] = w.errors.get(kind, 0) + n
        w.latency.append({int(k): v for k, v in line["lat"].items()})
        if last_cpu is not None:
            w.cpu_s += max(0.0, line["cpu_s"] - last_cpu)
        last_cpu = line["cpu_s"]
    return windows


def client_series(
    scenario: str,
    lines: Sequence[Mapping[str, Any]],
    t0_wall: float,
    interval_s: float,
    latency_judged: bool = True,
) -> list[Series]:
    windows = sorted(client_windows(lines, t0_wall, interval_s).items())
    kinds = sorted({k for _, w in windows for k in w.errors})
    p50, p99 = [], []
    for t, w in windows:
        hist = merge(w.latency)
        a, b = percentile_s(hist, 0.5), percentile_s(hist, 0.99)
        if a is not None and b is not None:
            p50.append((t, a))
            p99.append((t, b))
    return [
        Series(
            f"{scenario}.rps",
            f"{scenario}: exchanges completed per second",
            "req/s",
            {"ok/s": [(t, w.ok / interval_s) for t, w in windows]},
            "ok/s",
            "rps",
        ),
        Series(
            f"{scenario}.latency",
            f"{scenario}: latency p50 and p99 (p99 judged)"
            if latency_judged
            else f"{scenario}: time to reap p50 and p99 (bounded by the not_reaped error class)",
            "s",
            {"p50": p50, "p99": p99},
            "p99" if latency_judged else None,
            "latency" if latency_judged else None,
        ),
        Series(
            f"{scenario}.errors",
            f"{scenario}: client errors by class, per window",
            "errors",
            {k: [(t, float(w.errors.get(k, 0))) for t, w in windows] for k in kinds}
            or {"none": [(t, 0.0) for t, _ in windows]},
            None,
            "errors",
        ),
    ]


def client_cpu_series(
    per_scenario: Mapping[str, Sequence[Mapping[str, Any]]], t0_wall: float, interval_s: float
) -> Series:
    lines = {}
    for name, rows in per_scenario.items():
        windows = sorted(client_windows(rows, t0_wall, interval_s).items())
        lines[name] = [(t, 100 * w.cpu_s / interval_s) for t, w in windows]
    return Series(
        "clients.cpu_percent",
        "Load client CPU (% of one core, per process): near 100 means the client is the bottleneck",
        "%",
        lines,
    )


def error_intervals(
    lines: Sequence[Mapping[str, Any]], t0_wall: float
) -> list[tuple[float, float, dict[str, int]]]:
    return [
        (line["t"] - t0_wall - line["dt"], line["t"] - t0_wall, line["err"])
        for line in lines
        if line["err"]
    ]
