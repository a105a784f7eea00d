"""The access log of a real gateway never loses the line of a request that finished just
before its worker went away: a drain (`gatewayctl drain`, what a reload does to the old
generation), a graceful stop of the whole gateway, and a SIGTERM to the worker itself (the
supervisor's step after an overrun drain; the worker still dies by that signal).

The flush interval is set to a minute, and each test first sees the line still buffered:
only the exit path can have written it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from live_traffic import DemoProcess, http_get
from running_gateway import RunningGateway, free_port

BUFFERED_S = 0.5  # how long a test checks that the line is still in the worker's buffer


@pytest.fixture(scope="module")
def backend_port() -> Iterator[int]:
    port = free_port()
    demo = DemoProcess([port])
    yield port
    demo.stop()


def _config(port: int, backend_port: int) -> str:
    return f"""
[runtime]
workers = 1
drain_timeout_ms = 1000

[observability]
log_format = "json"
access_log = true
access_log_flush_ms = 60000

[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""


def _lines_for(gw: RunningGateway, path: str) -> list[dict[str, object]]:
    return [e for e in gw.events("access") if e.get("path") == path]


def _request_then_see_it_buffered(gw: RunningGateway, port: int) -> str:
    path = f"/probe-{uuid.uuid4().hex}"
    assert http_get(port, path).status == 200
    time.sleep(BUFFERED_S)
    assert _lines_for(gw, path) == [], "written before the exit path: the test proves nothing"
    return path


def _wait_for_line(gw: RunningGateway, path: str, timeout_s: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while not (lines := _lines_for(gw, path)):
        assert time.monotonic() < deadline, f"no access line for {path}:\n{gw.logs()[-3000:]}"
        time.sleep(0.1)
    assert len(lines) == 1, lines
    return lines[0]


def test_line_survives_a_drain(gateway_factory, backend_port: int) -> None:
    port = free_port()
    gw = gateway_factory.start(_config(port, backend_port))
    pid = gw.workers()[0]["pid"]
    path = _request_then_see_it_buffered(gw, port)
    assert gw.ctl("drain", "0", "--timeout", "1").returncode == 0
    line = _wait_for_line(gw, path)
    assert (line["status"], line["listener"], line["pid"], line["method"]) == (
        200,
        "web",
        pid,
        "GET",
    )


def test_line_survives_a_graceful_stop(gateway_factory, backend_port: int) -> None:
    port = free_port()
    gw = gateway_factory.start(_config(port, backend_port))
    path = _request_then_see_it_buffered(gw, port)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=15) == 0
    assert _wait_for_line(gw, path, timeout_s=0.1)["status"] == 200


def test_line_survives_sigterm_to_the_worker(gateway_factory, backend_port: int) -> None:
    port = free_port()
    gw = gateway_factory.start(_config(port, backend_port))
    pid = gw.workers()[0]["pid"]
    path = _request_then_see_it_buffered(gw, port)
    os.kill(pid, signal.SIGTERM)
    assert _wait_for_line(gw, path)["pid"] == pid
    deadline = time.monotonic() + 10
    while not any(e["pid"] == pid for e in gw.events("worker_exited")):
        assert time.monotonic() < deadline, gw.logs()[-3000:]
        time.sleep(0.1)
    exited = [e for e in gw.events("worker_exited") if e["pid"] == pid]
    assert exited[0]["how"] == "signal SIGTERM", exited
