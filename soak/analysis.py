"""From a finished run's records to its `Analysis`: series, verdicts, error attribution,
client figures.

Pure over data already read: samples, client lines, chaos outcomes in; the report's input
out. Every verdict row the exit status depends on is made here, and each names the series
it is about (so the report can show its plot). It must never read or write files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from soak.chaos_actions import ChaosOutcome
from soak.chaos_schedule import AFTERMATH_S, ALLOWED_ERRORS, REPLACES_WORKERS
from soak.error_budget import EventWindow, tally
from soak.report import Analysis
from soak.scenarios import all_scenarios
from soak.series import client_cpu_series, client_series, error_intervals, gateway_series
from soak.verdict import RULES, judge


def _windows(outcomes: Sequence[ChaosOutcome]) -> list[EventWindow]:
    return [
        EventWindow(o.seq, o.kind, o.started_s - 1.0, o.ended_s + AFTERMATH_S[o.kind])
        for o in outcomes
    ]


# After a replacing fault reports settled (no worker draining), its old workers have been
# reaped; this covers the sample that raced the reap.
REAP_MARGIN_S = 1.0


def _replacing(outcomes: Sequence[ChaosOutcome]) -> list[tuple[float, float]]:
    return [
        (o.started_s, o.ended_s + REAP_MARGIN_S) for o in outcomes if o.kind in REPLACES_WORKERS
    ]


def _row(series: str, passed: bool, rule: str, detail: str, verdict: str = "") -> dict[str, Any]:
    return {
        "series": series,
        "verdict": verdict or ("PASS" if passed else "FAIL"),
        "passed": passed,
        "rule": rule,
        "detail": detail,
    }


def analyze(
    meta: dict[str, Any],
    samples: Sequence[Mapping[str, Any]],
    client_lines: Mapping[str, Sequence[Mapping[str, Any]]],
    outcomes: Sequence[ChaosOutcome],
    gateway_survived: bool,
    client_exit_codes: Mapping[str, int | None] | None = None,
) -> Analysis:
    t0, interval, warmup = meta["t0_wall"], meta["sample_s"], meta["warmup_s"]
    series = gateway_series(samples, _replacing(outcomes))
    scenarios = all_scenarios()
    for name, lines in client_lines.items():
        known = scenarios.get(name)
        judged = known.latency_judged if known is not None else True
        series += client_series(name, lines, t0, interval, latency_judged=judged)
    series.append(client_cpu_series(client_lines, t0, interval))

    verdicts: list[dict[str, Any]] = []
    for s in series:
        if s.rule in RULES and s.judged is not None:
            verdicts.append(judge(s.name, s.lines[s.judged], RULES[s.rule], warmup).to_json())

    windows = _windows(outcomes)
    errors: dict[str, dict[str, Any]] = {}
    explained: dict[int, dict[str, int]] = {}
    for name, lines in client_lines.items():
        t = tally(error_intervals(lines, t0), windows)
        errors[name] = t.to_json()
        for seq, per in t.by_event.items():
            for kind, n in per.items():
                explained.setdefault(seq, {})[f"{name}:{kind}"] = n
        detail = f"unexpected {t.unexpected}" if t.unexpected else f"explained by chaos {t.allowed}"
        code = (client_exit_codes or {}).get(name, 0)
        if code != 0:
            detail = f"the client exited with {code} (see clients/{name}.log); {detail}"
        passed = t.passed and code == 0
        verdicts.append(_row(f"{name}.errors", passed, "0 errors outside chaos allowances", detail))
        if not lines:
            verdicts.append(
                _row(f"{name}.rps", False, "client reported", "the client wrote nothing")
            )

    chaos = []
    for o in outcomes:
        chaos.append({**o.to_json(), "explained": explained.get(o.seq, {})})
    failed = [f"#{o.seq} {o.kind}: {o.detail}" for o in outcomes if not o.ok]
    kinds = sorted({o.kind for o in outcomes})
    verdicts.append(
        _row(
            "chaos",
            not failed,
            "every fault performed and taken as designed",
            "; ".join(failed) or f"{len(outcomes)} events ({', '.join(kinds) or 'none planned'})",
        )
    )
    scraped = sum(1 for s in samples if s["scrape_ok"])
    verdicts.append(
        _row(
            "gateway.alive",
            gateway_survived and scraped > 0,
            "the supervisor lived to the end; /metrics answered",
            f"survived={gateway_survived}, {scraped}/{len(samples)} scrapes answered",
        )
    )
    clients = {}
    for name, lines in client_lines.items():
        cpu = next(s for s in series if s.name == "clients.cpu_percent").lines.get(name, [])
        info: dict[str, int] = {}
        for line in lines:
            for k, n in line["info"].items():
                info[k] = info.get(k, 0) + n
        clients[name] = {
            "ok": sum(line["ok"] for line in lines),
            "errors": sum(sum(line["err"].values()) for line in lines),
            "cpu_mean_percent": sum(v for _, v in cpu) / len(cpu) if cpu else 0.0,
            "cpu_max_percent": max((v for _, v in cpu), default=0.0),
            "info": info,
        }
    meta = {**meta, "allowed_errors": {k: sorted(v) for k, v in ALLOWED_ERRORS.items()}}
    return Analysis(meta, verdicts, chaos, errors, clients, series)
