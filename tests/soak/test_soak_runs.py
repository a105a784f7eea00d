"""The soak runner end to end: the `ci` profile against the real gateway (every scenario,
every fault kind) passes and writes a report with a verdict table and a plot per series;
a client that leaks connections makes the fd verdict DRIFT and the run fail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from soak import chaos_schedule as cs
from soak import gateway_config
from soak.backends import Backend
from soak.cli import build_parser
from soak.gateway_process import OwnedGateway
from soak.scenarios import all_scenarios, default_names
from tools.ports import free_port

# Judged by latency and throughput over time: run alone, after the parallel tests (Makefile).
pytestmark = pytest.mark.serial

BIN = Path(sys.executable).parent


class _ReportHtml(HTMLParser):
    """The verdict table's rows and, per <figure data-series>, whether it holds an <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.verdict_rows: list[list[str]] = []
        self.figures: dict[str, bool] = {}
        self._in_verdicts = False
        self._row: list[str] | None = None
        self._figure: str | None = None
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("class") == "verdicts":
            self._in_verdicts = True
        elif self._in_verdicts and tag == "tr":
            self._row = []
        elif self._in_verdicts and tag == "td" and self._row is not None:
            self._row.append("")
            self._cell = True
        elif tag == "figure":
            self._figure = a.get("data-series")
            self.figures[self._figure or ""] = False
        elif tag == "svg" and self._figure is not None:
            self.figures[self._figure] = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_verdicts = False
        elif tag == "tr" and self._row:
            self.verdict_rows.append(self._row)
            self._row = None
        elif tag == "td":
            self._cell = False
        elif tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._cell and self._row is not None:
            self._row[-1] += data


def _soak(
    out: Path, *args: str, timeout_s: float
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [str(BIN / "expressgateway-soak"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    report_path = out / "report.json"
    assert report_path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(report_path.read_text())


def _verdict(report: dict[str, Any], series: str) -> dict[str, Any]:
    return next(v for v in report["verdicts"] if v["series"] == series)


def test_help_explains_every_flag() -> None:
    text = build_parser().format_help()
    for flag in (
        "--profile", "--duration", "--scenario", "--out", "--list", "--scale",
        "--client-cpus", "--gateway-cpus", "--attach", "--control-socket", "--admin-url",
        "--target", "--chaos", "--seed",
    ):  # fmt: skip
        assert flag in text


def test_registry_has_one_module_per_scenario_and_the_leak_is_opt_in() -> None:
    scenarios = all_scenarios()
    for name in ("h1_keepalive", "h1_new_connection", "h1_large_bodies", "ws_echo",
                 "tcp_echo", "tls_echo", "udp_echo", "slowloris", "slow_post", "conn_flood"):  # fmt: skip
        assert name in default_names()
        assert scenarios[name].run.__module__ == f"soak.scenarios.{name}"
    assert "fd_leak" in scenarios and "fd_leak" not in default_names()


@pytest.mark.slow
def test_ci_profile_passes_every_scenario_and_fault_and_reports_them(tmp_path: Path) -> None:
    started = time.monotonic()
    proc, report = _soak(tmp_path / "ci", "--profile", "ci", timeout_s=240)
    wall_s = time.monotonic() - started
    failing = [v for v in report["verdicts"] if not v["passed"]]
    assert proc.returncode == 0 and report["passed"], (failing, proc.stdout[-4000:])
    assert wall_s <= 180, f"the ci profile took {wall_s:.0f}s"

    assert report["meta"]["scenarios"] == default_names()
    for name in default_names():
        assert report["clients"][name]["ok"] > 0, name
        assert _verdict(report, f"{name}.errors")["passed"]
    assert {c["kind"] for c in report["chaos"]} == set(cs.KINDS)
    assert all(c["ok"] for c in report["chaos"])
    for series in (
        "gateway.rss",
        "gateway.uss",
        "gateway.fds",
        "gateway.threads",
        "supervisor.rss",
    ):
        assert _verdict(report, series)["verdict"] == "BOUNDED"

    page = _ReportHtml()
    page.feed((tmp_path / "ci" / "report.html").read_text())
    assert [row[0] for row in page.verdict_rows] == [v["series"] for v in report["verdicts"]]
    assert all(row[1] in ("BOUNDED", "PASS") for row in page.verdict_rows)
    names = [s["name"] for s in report["series"]]
    assert set(page.figures) == set(names)
    assert all(page.figures.values()), [n for n, has_svg in page.figures.items() if not has_svg]


@pytest.mark.slow
def test_a_client_that_never_closes_connections_is_seen_as_fd_drift(tmp_path: Path) -> None:
    proc, report = _soak(
        tmp_path / "leak",
        "--profile", "custom", "--duration", "30", "--sample", "1", "--warmup", "6",
        "--scenario", "tcp_echo,fd_leak", "--chaos", "none",
        timeout_s=150,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    fds = _verdict(report, "gateway.fds")
    assert fds["verdict"] == "DRIFT", fds
    assert fds["growth"] > 200, fds  # two fds per held connection, ten connections a second
    assert _verdict(report, "supervisor.fds")["verdict"] == "BOUNDED"
    assert _verdict(report, "fd_leak.errors")["passed"]
    assert _verdict(report, "tcp_echo.errors")["passed"]
    assert report["clients"]["fd_leak"]["ok"] >= 200
    assert "DRIFT" in (tmp_path / "leak" / "report.html").read_text()


@pytest.mark.slow
def test_attach_drives_a_running_gateway_and_leaves_it_running(tmp_path: Path) -> None:
    """Bare-metal mode: the runner gets a control socket, an admin URL and listener
    addresses, runs only the faults it can do from outside, pins its clients, and never
    stops the gateway it did not start. Its recorded files alone give the same verdicts."""
    backends = [Backend.on_free_ports(n, tmp_path) for n in ("A", "B")]
    scenarios = [all_scenarios()[n] for n in ("h1_keepalive", "tcp_echo")]
    ports = gateway_config.GatewayPorts(
        str(tmp_path / "ctl.sock"), free_port(), {s.name: free_port() for s in scenarios}
    )
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_config.render(scenarios, backends, ports))
    gateway = OwnedGateway(config, ports.control_socket, ports.metrics_port, tmp_path / "gw.log")
    try:
        for b in backends:
            b.start()
        gateway.start()
        proc, report = _soak(
            tmp_path / "attach",
            "--attach", "--control-socket", ports.control_socket,
            "--admin-url", f"http://127.0.0.1:{ports.metrics_port}",
            "--target", f"h1_keepalive=127.0.0.1:{ports.listeners['h1_keepalive']}",
            "--target", f"tcp_echo=127.0.0.1:{ports.listeners['tcp_echo']}",
            "--scenario", "h1_keepalive,tcp_echo", "--client-cpus", "0",
            "--profile", "custom", "--duration", "20", "--sample", "1", "--warmup", "4",
            "--chaos", "reload,worker_kill,health_flap", "--chaos-every", "5",
            timeout_s=120,
        )  # fmt: skip
        assert proc.returncode == 0, (
            [v for v in report["verdicts"] if not v["passed"]],
            proc.stdout[-3000:],
        )
        assert "skipping" in proc.stdout and "health_flap" in proc.stdout
        assert {c["kind"] for c in report["chaos"]} == {"reload", "worker_kill"}
        assert all(c["ok"] for c in report["chaos"])
        assert report["clients"]["h1_keepalive"]["ok"] > 100
        log = (tmp_path / "attach" / "clients" / "h1_keepalive.log").read_text()
        assert "on cpus [0]" in log
        assert gateway.alive() and gateway.is_settled()  # still serving, untouched by the runner
    finally:
        gateway.stop()
        for b in backends:
            b.kill()

    # the recorded files alone give the same judgement
    again = subprocess.run(
        [str(BIN / "expressgateway-soak"), "--reanalyze", str(tmp_path / "attach")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    rejudged = json.loads((tmp_path / "attach" / "report.json").read_text())
    assert rejudged["verdicts"] == report["verdicts"]
