"""The run's report: `report.json` (everything, machine-readable) and one self-contained
`report.html` — the verdict table on top, then the chaos events, the error attribution, the
load generators, and one plot per series with the chaos events on the time axis.

Owns the layout of both files. Its input is the finished analysis (`Analysis`); it must
never judge, sample or run anything.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak import plots
from soak.chaos_schedule import ALLOWED_ERRORS
from soak.series import Series


@dataclass
class Analysis:
    meta: dict[str, Any]
    verdicts: list[dict[str, Any]]  # each: series, verdict, passed, rule, detail
    chaos: list[dict[str, Any]]
    errors: dict[str, dict[str, Any]]  # scenario -> ErrorTally.to_json()
    clients: dict[str, dict[str, Any]]  # scenario -> totals, cpu, info counters
    series: list[Series] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v["passed"] for v in self.verdicts)


def write_json(analysis: Analysis, path: Path) -> None:
    doc = {
        "passed": analysis.passed,
        "meta": analysis.meta,
        "verdicts": analysis.verdicts,
        "chaos": analysis.chaos,
        "allowed_errors": {k: sorted(v) for k, v in ALLOWED_ERRORS.items()},
        "errors": analysis.errors,
        "clients": analysis.clients,
        "series": [s.to_json() for s in analysis.series],
    }
    path.write_text(json.dumps(doc, indent=1, default=float))


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        value += 0.0  # -0.0 prints as 0
        if unit == "bytes":
            return f"{value / (1024 * 1024):.1f} MiB"
        if unit == "s":
            return f"{value * 1000:.1f} ms"
        return f"{value:.3g}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_rows(analysis: Analysis) -> list[list[str]]:
    rows = []
    for v in analysis.verdicts:
        unit = v.get("unit", "")
        cls = "pass" if v["passed"] else "fail"
        rows.append(
            [
                f'<a href="#series-{html.escape(v["series"])}">{html.escape(v["series"])}</a>',
                f'<span class="{cls}">{html.escape(v["verdict"])}</span>',
                html.escape(v["rule"]),
                _fmt(v.get("median", ""), unit),
                _fmt(v.get("growth", ""), unit),
                _fmt(v.get("threshold", ""), unit),
                html.escape(str(v.get("detail") or v.get("note") or "")),
            ]
        )
    return rows


# A client process busier than this on average is the bottleneck, not the gateway.
CLIENT_BOUND_PERCENT = 80.0

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
th{background:#f3f3f3}.pass{color:#060;font-weight:bold}.fail{color:#b00;font-weight:bold}
figure{margin:0 0 1em}figcaption{font-size:12px;color:#555}code{font-size:12px}
"""


def _header(analysis: Analysis) -> list[str]:
    meta = analysis.meta
    overall = "PASS" if analysis.passed else "FAIL"
    return [
        f"<!doctype html><html><head><meta charset='utf-8'><title>ExpressGateway soak {overall}</title>",
        f"<style>{STYLE}</style></head><body>",
        f'<h1>ExpressGateway soak: <span class="{overall.lower()}">{overall}</span></h1>',
        f"<p>profile <b>{html.escape(str(meta['profile']))}</b>, {meta['duration_s']:g} s, "
        f"sample every {meta['sample_s']:g} s, warm-up {meta['warmup_s']:g} s (not judged), "
        f"seed {meta['seed']}, scale {meta['scale']:g}, scenarios {html.escape(', '.join(meta['scenarios']))}. "
        f"Started {html.escape(meta['started_at'])}. Command: <code>{html.escape(meta['command'])}</code></p>",
    ]


def _verdicts(analysis: Analysis) -> list[str]:
    return [
        "<h2 id='verdicts'>Verdicts</h2>",
        "<p>Trend rule (Theil-Sen slope over the steady part, whole window and second half): "
        "DRIFT when the whole-window trend moves the series past the threshold and the "
        "second-half trend still moves it past half the threshold. Errors: every client "
        "error must be explained by a chaos event that allows its class, within that event's window.</p>",
        _table(
            [
                "series",
                "verdict",
                "rule",
                "steady median",
                "trend over window",
                "threshold",
                "note",
            ],
            _verdict_rows(analysis),
            "verdicts",
        ),
    ]


def _chaos(analysis: Analysis) -> list[str]:
    rows = [
        [
            str(c["seq"]),
            html.escape(c["kind"]),
            f"{c['planned_s']:.1f}",
            f"{c['started_s']:.1f}",
            f"{c['ended_s']:.1f}",
            f'<span class="{"pass" if c["ok"] else "fail"}">{"yes" if c["ok"] else "NO"}</span>',
            html.escape(", ".join(sorted(ALLOWED_ERRORS[c["kind"]])) or "none"),
            html.escape(json.dumps(c.get("explained", {}))),
            html.escape(c["detail"]),
        ]
        for c in analysis.chaos
    ]
    headers = ["#", "kind", "planned s", "started s", "ended s", "ok", "allowed errors",
               "errors explained", "detail"]  # fmt: skip
    return ["<h2>Chaos events</h2>", _table(headers, rows)]


def _clients(analysis: Analysis) -> list[str]:
    errors = [
        [
            html.escape(name),
            html.escape(json.dumps(e["unexpected"])),
            html.escape(json.dumps(e["allowed"])),
            html.escape(", ".join(str(x) for x in e["first_unexpected_s"])),
        ]
        for name, e in analysis.errors.items()
    ]
    load = [
        [
            html.escape(name),
            str(c["ok"]),
            str(c["errors"]),
            f"{c['cpu_mean_percent']:.1f}",
            f"{c['cpu_max_percent']:.1f}",
            '<span class="fail">yes</span>'
            if c["cpu_mean_percent"] > CLIENT_BOUND_PERCENT
            else "no",
            html.escape(json.dumps(c["info"])),
        ]
        for name, c in analysis.clients.items()
    ]
    return [
        "<h2>Client errors</h2>",
        _table(["scenario", "unexpected", "explained by chaos", "first unexpected at s"], errors),
        "<h2>Load generators</h2>",
        _table(
            [
                "scenario",
                "exchanges ok",
                "errors",
                "client CPU mean %",
                "client CPU max %",
                "client-bound",
                "notes",
            ],
            load,
        ),
    ]


def _figures(analysis: Analysis) -> list[str]:
    meta = analysis.meta
    events = [(c["started_s"], c["kind"]) for c in analysis.chaos]
    end_s, warmup_s = float(meta["duration_s"]), float(meta["warmup_s"])
    return ["<h2>Series</h2>"] + [
        f'<figure id="series-{html.escape(s.name)}" data-series="{html.escape(s.name)}">'
        f"<figcaption>{html.escape(s.name)}</figcaption>"
        f"{plots.svg(s, events, warmup_s, end_s)}</figure>"
        for s in analysis.series
    ]


def write_html(analysis: Analysis, path: Path) -> None:
    parts = [
        *_header(analysis),
        *_verdicts(analysis),
        *_chaos(analysis),
        *_clients(analysis),
        *_figures(analysis),
        "</body></html>",
    ]
    path.write_text("\n".join(parts))
