"""The Grafana dashboard references only metric families the gateway emits (and all of them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics.families import FAMILIES_BY_NAME, Kind

DASHBOARD = Path(__file__).resolve().parent.parent / "conf" / "grafana" / "expressgateway.json"

_PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_SUFFIXES = {
    "_bucket": Kind.HISTOGRAM,
    "_sum": Kind.HISTOGRAM,
    "_count": Kind.HISTOGRAM,
    "_created": None,
}


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (functions, keywords, label names,
    strings, ranges and Grafana variables are not metric names)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", e):
        if m.group(2) is None and m.group(1).lower() not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def family_of(name: str) -> str | None:
    """The family a sample name belongs to, or None when the gateway emits no such name."""
    if name in FAMILIES_BY_NAME:
        return name
    for suffix, kind in _SUFFIXES.items():
        base = name.removesuffix(suffix)
        if (
            base != name
            and base in FAMILIES_BY_NAME
            and (kind is None or FAMILIES_BY_NAME[base].kind is kind)
        ):
            return base
    return None


def _load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def _template_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        exprs.append(m.group(1) if m else q)
    return exprs


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (listener, code) (rate(expressgateway_requests_total{listener=~"$l"}[$__rate_interval]))',
            {"expressgateway_requests_total"},
        ),
        (
            "histogram_quantile(0.99, sum(rate(a_bucket[5m])) by (le)) / on(job) group_left b offset 1h",
            {"a_bucket", "b"},
        ),
        ('up{job="x"} > 1e3 and bool nan', {"up"}),
        ('label_replace(foo, "dst", "$1", "src", "(.*)")', {"foo"}),
    ],
)
def test_extractor(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_family_of() -> None:
    assert family_of("expressgateway_request_duration_seconds_bucket") is not None
    assert family_of("expressgateway_requests_total") is not None
    assert family_of("expressgateway_requests_total_created") is not None
    assert family_of("expressgateway_requests_bucket") is None  # not a histogram
    assert family_of("expressgateway_requests") is None
    assert family_of("up") is None


def test_every_panel_expression_uses_only_emitted_families() -> None:
    dash = _load()
    unknown: list[tuple[str, str]] = []
    for panel in _panels(dash):
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for t in targets:
            names = metric_names(t["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {t['expr']!r}"
            unknown += [(panel["title"], n) for n in names if family_of(n) is None]
    for expr in _template_exprs(dash):
        unknown += [("templating", n) for n in metric_names(expr) if family_of(n) is None]
    assert unknown == []


def test_dashboard_covers_every_family() -> None:
    dash = _load()
    used = {
        family_of(n) for p in _panels(dash) for t in p["targets"] for n in metric_names(t["expr"])
    }
    assert set(FAMILIES_BY_NAME) - used == set()


def test_dashboard_shape() -> None:
    dash = _load()
    assert dash["uid"] == "expressgateway"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in _panels(dash):
        assert p["datasource"]["uid"] == "${datasource}"
