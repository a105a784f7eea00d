"""Per-request metrics through two real workers, merged by the supervisor, read from /metrics."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import time

from prometheus_client.parser import text_string_to_metric_families
from running_gateway import DemoBackends, free_port


def config(port: int, admin: int, backends: list[int], tcp_port: int, echo: list[int]) -> str:
    b = "".join(f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in backends)
    e = "".join(f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in echo)
    return f"""
[runtime]
drain_timeout_ms = 4000

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.outlier]
consecutive_failures = 1000
{b}
[[listeners]]
name = "raw"
address = "127.0.0.1:{tcp_port}"
protocol = "tcp"
{e}
"""


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def scrape(admin: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(admin, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def by_code(samples: dict, listener: str = "web") -> dict[str, float]:
    codes: dict[str, float] = {}
    for (name, labels), value in samples.items():
        d = dict(labels)
        if name == "expressgateway_requests_total" and d.get("listener") == listener:
            codes[d["code"]] = codes.get(d["code"], 0) + value
    return codes


def drive(port: int, n200: int, n302: int = 0, n404: int = 0, n503: int = 0) -> None:
    plan = (
        [("/", 200)] * n200
        + [("/status/302", 302)] * n302
        + [("/status/404", 404)] * n404
        + [("/status/503", 503)] * n503
    )
    # Loopback connections are steered to the worker of the CPU the client runs on
    # (SO_INCOMING_CPU); alternate the client's CPU so both workers serve.
    cpus = sorted(os.sched_getaffinity(0))
    try:
        for i, (path, expected) in enumerate(plan):
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})
            status, _ = get(port, path)
            assert status == expected, (path, status)
    finally:
        os.sched_setaffinity(0, set(cpus))


def wait_for_codes(admin: int, expected: dict[str, float], timeout_s: float = 6.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(admin)
        if by_code(samples) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_exact_request_counts_survive_worker_kill_and_reload(gateway_factory) -> None:
    http_ports = [free_port(), free_port()]
    echo = [free_port()]
    backends = DemoBackends(http=http_ports, tcp_echo=echo)
    try:
        port, admin, tcp_port = free_port(), free_port(), free_port()
        gw = gateway_factory.start(config(port, admin, http_ports, tcp_port, echo))
        drive(port, n200=30, n302=5, n404=10, n503=4)
        samples = wait_for_codes(admin, {"2xx": 30, "3xx": 5, "4xx": 10, "5xx": 4})
        assert by_code(samples) == {"2xx": 30, "3xx": 5, "4xx": 10, "5xx": 4}
        handled = [w["handled_requests"] for w in gw.workers()]
        assert len(handled) == 2 and all(h > 0 for h in handled), (
            f"both workers must serve: {handled}"
        )
        assert (
            samples[("expressgateway_request_duration_seconds_count", (("listener", "web"),))] == 49
        )
        conns = samples[("expressgateway_connections_total", (("listener", "web"),))]
        assert conns == 49
        # L4 bytes are counted both ways.
        with socket.create_connection(("127.0.0.1", tcp_port)) as s:
            s.sendall(b"x" * 1000)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while data := s.recv(4096):
                got += data
        assert len(got) == 1000
        key_in = ("expressgateway_bytes_total", (("direction", "in"), ("listener", "raw")))
        deadline = time.monotonic() + 5
        while scrape(admin).get(key_in) != 1000:  # reported with the next heartbeat
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # SIGKILL one worker: what it reported stays, and counting goes on. (What a worker
        # counted after its last heartbeat, at most 1 s, dies with it.)
        victim = gw.workers()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while len(gw.ready_workers()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        drive(port, n200=10)
        samples = wait_for_codes(admin, {"2xx": 40, "3xx": 5, "4xx": 10, "5xx": 4})
        assert by_code(samples) == {"2xx": 40, "3xx": 5, "4xx": 10, "5xx": 4}
        assert (
            samples[("expressgateway_bytes_total", (("direction", "in"), ("listener", "raw")))]
            == 1000
        )
        assert (
            samples[("expressgateway_bytes_total", (("direction", "out"), ("listener", "raw")))]
            == 1000
        )
        assert samples[("expressgateway_worker_restarts_total", ())] == 1
        # A reload: a new generation, the old one's counters are kept.
        assert gw.ctl("reload").returncode == 0
        drive(port, n200=10)
        samples = wait_for_codes(admin, {"2xx": 50, "3xx": 5, "4xx": 10, "5xx": 4})
        assert by_code(samples) == {"2xx": 50, "3xx": 5, "4xx": 10, "5xx": 4}
        assert samples[("expressgateway_reloads_total", (("result", "success"),))] == 1
        assert samples[("expressgateway_build_info", (("version", "0.1.0"),))] == 1
        # gatewayctl reads the same merged source of per-worker figures.
        status = gw.ctl_json("status")["data"]
        assert status["workers_ready"] == 2
        assert status["requests_total"] == 69  # the same merged source as /metrics
    finally:
        backends.stop()


def test_readyz_503_during_graceful_stop_while_metrics_answers(gateway_factory) -> None:
    http_ports = [free_port()]
    echo = [free_port()]
    backends = DemoBackends(http=http_ports, tcp_echo=echo)
    try:
        port, admin, tcp_port = free_port(), free_port(), free_port()
        gw = gateway_factory.start(config(port, admin, http_ports, tcp_port, echo))
        assert get(admin, "/readyz")[0] == 200
        assert get(admin, "/startupz")[0] == 200
        held = socket.create_connection(("127.0.0.1", tcp_port), timeout=10)  # keeps the drain busy
        held.sendall(b"hold")
        assert held.recv(10) == b"hold"
        gw.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while get(admin, "/readyz")[0] != 503:
            assert time.monotonic() < deadline, "readyz never went 503"
            time.sleep(0.05)
        for _ in range(5):  # answerable through the whole drain
            assert get(admin, "/readyz")[0] == 503
            assert get(admin, "/livez")[0] == 200
            assert get(admin, "/healthz")[0] == 200
            status, body = get(admin, "/metrics")
            assert status == 200 and b"expressgateway_workers" in body
            time.sleep(0.2)
        held.close()
        assert gw.proc.wait(timeout=15) == 0
    finally:
        backends.stop()
