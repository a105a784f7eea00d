"""Active and passive health steering live traffic through the real gateway (2 workers).

TCP checks against real echo backends that die and come back under steady client
load; HTTP checks (`GET /healthz` must answer 200) against demo backends answering
503 there; panic mode; passive outlier ejection of a backend answering 500.
Evidence comes from the outside only: which backend answered, `gatewayctl
backends`, the supervisor's /metrics and the JSON log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from live_traffic import (
    CountingEcho,
    DemoProcess,
    SteadyLoad,
    backend_of,
    burst,
    echo_through,
    http_get,
    scrape,
    upstream_errors,
)
from running_gateway import RunningGateway, free_port

INTERVAL_S, RISE, FALL = 0.2, 2, 2
HEALTH = f"""[listeners.health]
interval_ms = {int(INTERVAL_S * 1000)}
timeout_ms = 150
rise = {RISE}
fall = {FALL}
"""
# The verdict may land up to one interval after the event (probe phase), the
# broadcast and a gatewayctl process start on 2 busy cores take the rest.
SLACK_S = 1.0


def backends_toml(ports: list[int]) -> str:
    return "".join(f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in ports)


def rows(gw: RunningGateway, listener: str) -> dict[str, dict[str, Any]]:
    answer = gw.ctl_json("backends")
    assert answer["ok"], answer
    return {r["backend"]: r for r in answer["data"] if r["listener"] == listener}


def wait_until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `check()` held; fails with `what` after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.1f}s")
        time.sleep(0.05)
    return time.monotonic() - started


def health_is(gw: RunningGateway, listener: str, port: int, state: str) -> Callable[[], bool]:
    return lambda: rows(gw, listener)[backend_of(port)]["health"] == state


@pytest.fixture
def gateway(tmp_path: Any) -> Iterator[Callable[[str], RunningGateway]]:
    started: list[RunningGateway] = []

    def start(config: str) -> RunningGateway:
        gw = RunningGateway(tmp_path, "[runtime]\nworkers = 2\ndrain_timeout_ms = 2000\n" + config)
        started.append(gw)
        return gw.start()

    yield start
    for gw in started:
        gw.stop()


@pytest.mark.slow
def test_tcp_checks_eject_and_readmit_under_load(
    gateway: Callable[[str], RunningGateway],
) -> None:
    ports = [free_port() for _ in range(3)]
    echoes = [CountingEcho(p) for p in ports]
    admin, port = free_port(), free_port()
    gw = gateway(
        f"""
[observability]
metrics_bind = "127.0.0.1:{admin}"
[[listeners]]
name = "echo"
address = "127.0.0.1:{port}"
protocol = "tcp"
{HEALTH}kind = "tcp"
[listeners.outlier]
consecutive_failures = 3
base_ejection_ms = 500
max_ejection_ms = 1000
{backends_toml(ports)}"""
    )
    for p in ports:
        wait_until(f"{p} up at start", health_is(gw, "echo", p, "up"), 5)
    killed_at = float("inf")
    load = SteadyLoad(port, clients=2)
    try:
        wait_until("every backend serves", lambda: all(e.served for e in echoes), 5)
        victim, vport = echoes[1], ports[1]

        # 1. Killed: down within fall x interval (+ slack), no new client connection fails.
        victim.kill()
        killed_at = time.monotonic()
        took_s = wait_until("killed backend marked down", health_is(gw, "echo", vport, "down"), 5)
        bound_s = FALL * INTERVAL_S + INTERVAL_S + SLACK_S
        assert took_s <= bound_s, f"down after {took_s:.2f}s, want <= {bound_s:.1f}s"
        # After the verdict the gateway stops dialling it: its connect errors stop growing
        # (the counters reach /metrics with the workers' 1 s heartbeats).
        time.sleep(1.3)
        errors_then = upstream_errors(admin, "echo", backend_of(vport))
        served_then = [e.served for e in echoes]
        time.sleep(1.5)
        errors_now = upstream_errors(admin, "echo", backend_of(vport))
        assert errors_now == errors_then, (
            f"connect errors to the down backend grew {errors_then} -> {errors_now}: still dialled"
        )
        others = [e.served - s for e, s in zip(echoes, served_then, strict=True)]
        assert others[0] > 0 and others[2] > 0, f"the two live backends served {others}"
        after_kill = [r for r in load.results if r.started_at > killed_at]
        failed = [r.error for r in after_kill if not r.ok]
        assert after_kill and not failed, (
            f"{len(failed)} of {len(after_kill)} client connections opened after the kill "
            f"failed: {failed[:5]} (connect retry should cover the gap)"
        )

        # 2. Back on the same port: up after about rise x interval, and serving again.
        served_before = victim.served
        victim.start()
        took_s = wait_until("restarted backend up", health_is(gw, "echo", vport, "up"), 5)
        bound_s = RISE * INTERVAL_S + INTERVAL_S + SLACK_S
        assert took_s <= bound_s, f"up after {took_s:.2f}s, want <= {bound_s:.1f}s"
        wait_until("restarted backend serves", lambda: victim.served > served_before, 3)
    finally:
        results = load.stop()
    failed_total = [r for r in results if not r.ok and r.started_at > killed_at]
    assert not failed_total, f"client failures after the kill: {[r.error for r in failed_total]}"

    # 3. All down: every connection is closed promptly and counted, nothing hangs.
    for e in echoes:
        e.kill()
    no_backend_before = _no_backend(admin, "echo")
    attempts = [echo_through(port, b"anyone?\n", timeout_s=5) for _ in range(10)]
    assert not any(a.ok for a in attempts), "an echo came back with every backend dead"
    slowest_s = max(a.took_s for a in attempts)
    assert slowest_s < 2.0, f"a client waited {slowest_s:.2f}s for its answer, want < 2 s"
    wait_until(
        "no_backend counted in /metrics",
        lambda: _no_backend(admin, "echo") >= no_backend_before + 10,
        4,
    )
    wait_until(
        "all marked down", lambda: all(r["health"] == "down" for r in rows(gw, "echo").values()), 5
    )
    # 4. One comes back: traffic resumes (panic mode tries every backend meanwhile).
    echoes[2].start()
    wait_until("echo resumes", lambda: echo_through(port, b"back\n").ok, 5)
    assert any(e.get("listener") == "echo" for e in gw.events("balancer_panic")), (
        "no balancer_panic event while every backend was down"
    )
    # Health changes are logged at a level that matches what an operator must do about them.
    changes = [
        (e["backend"], e["previous"], e["current"], e["level"])
        for e in gw.events("backend_health_changed")
    ]
    for p in ports:
        assert (backend_of(p), "unknown", "up", "info") in changes, changes
    assert (backend_of(vport), "up", "down", "warning") in changes, changes
    assert (backend_of(vport), "down", "up", "warning") in changes, changes


def _no_backend(admin: int, listener: str) -> float:
    return sum(
        v
        for (name, labels), v in scrape(admin).items()
        if name == "expressgateway_upstream_errors_total"
        and dict(labels).get("listener") == listener
        and dict(labels).get("kind") == "no_backend"
    )


def test_http_checks_and_panic_mode(gateway: Callable[[str], RunningGateway]) -> None:
    ok1, ok2, bad1, bad2 = (free_port() for _ in range(4))
    procs = [DemoProcess([ok1, ok2]), DemoProcess([bad1, bad2], "--http-health-status", "503")]
    checks = f'{HEALTH}kind = "http"\npath = "/healthz"\nexpected_status = "200"\n'
    hc, panic = free_port(), free_port()
    try:
        gw = gateway(
            f"""
[[listeners]]
name = "hc"
address = "127.0.0.1:{hc}"
protocol = "h1"
{checks}{backends_toml([ok1, ok2, bad1])}
[[listeners]]
name = "panic"
address = "127.0.0.1:{panic}"
protocol = "h1"
[listeners.balancer]
panic_threshold = 50
{checks}{backends_toml([ok1, bad1, bad2])}"""
        )
        wait_until("503 on /healthz marked down", health_is(gw, "hc", bad1, "down"), 5)
        wait_until("200 on /healthz marked up", health_is(gw, "hc", ok1, "up"), 5)
        assert "status 503" in rows(gw, "hc")[backend_of(bad1)]["last_probe"]
        for p in (bad1, bad2):
            wait_until("panic listener: failing ones down", health_is(gw, "panic", p, "down"), 5)

        answers = burst([partial(http_get, hc, "/x") for _ in range(90)], concurrency=4)
        assert all(a.status == 200 for a in answers), {a.status for a in answers}
        got = {p: sum(a.backend == backend_of(p) for a in answers) for p in (ok1, ok2, bad1)}
        assert got[bad1] == 0, f"the backend failing its checks got {got[bad1]} of 90: {got}"
        assert got[ok1] > 0 and got[ok2] > 0, f"healthy backends: {got}"

        # 1 of 3 healthy is below panic_threshold = 50 %: balance over all three.
        answers = burst([partial(http_get, panic, "/y") for _ in range(90)], concurrency=4)
        assert all(a.status == 200 for a in answers), {a.status for a in answers}
        got = {p: sum(a.backend == backend_of(p) for a in answers) for p in (ok1, bad1, bad2)}
        assert min(got.values()) >= 15, (
            f"panic mode (1 of 3 healthy < 50 %) should spread round robin over all three "
            f"(30 each, want >= 15): {got}"
        )
        wait_until(
            "balancer_panic logged",
            lambda: any(e.get("listener") == "panic" for e in gw.events("balancer_panic")),
            3,
        )
        assert not any(e.get("listener") == "hc" for e in gw.events("balancer_panic"))
    finally:
        for proc in procs:
            proc.stop()


def test_passive_ejection_of_a_backend_answering_500(
    gateway: Callable[[str], RunningGateway],
) -> None:
    good, bad = free_port(), free_port()
    procs = [DemoProcess([good]), DemoProcess([bad], "--http-status", "500")]
    port = free_port()
    try:
        gw = gateway(
            f"""
[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.outlier]
consecutive_failures = 3
base_ejection_ms = 20000
max_ejection_ms = 20000
{backends_toml([good, bad])}"""
        )
        # Round robin in each worker: the bad backend's 3rd 500 ejects it there. Each
        # request is sent from CPU n % 2, which steers it to that CPU's worker.
        first = burst(
            [partial(http_get, port, f"/a{n}", cpu=n % 2) for n in range(16)], concurrency=1
        )
        fives = sum(a.status == 500 for a in first)
        assert 3 <= fives <= 2 * 3, f"{fives} answers were 500 before ejection; want 3..6"
        later = burst(
            [partial(http_get, port, f"/b{n}", cpu=n % 2) for n in range(40)], concurrency=2
        )
        wrong = [a for a in later if a.status != 200 or a.backend != backend_of(good)]
        assert not wrong, f"after ejection {len(wrong)} of 40 did not come from the good one"

        def ejected() -> bool:
            r = rows(gw, "web")
            return r[backend_of(bad)]["ejected_until_s"] > 0

        wait_until("ejected_until in gatewayctl backends --json", ejected, 3)
        r = rows(gw, "web")
        assert 0 < r[backend_of(bad)]["ejected_until_s"] <= 20, r
        assert r[backend_of(good)]["ejected_until_s"] == 0, r
        events = [e for e in gw.events("backend_ejected") if e.get("listener") == "web"]
        assert {e["backend"] for e in events} == {backend_of(bad)}, events
        assert {e["kind"] for e in events} == {"http_5xx"}, events
        assert len({e["pid"] for e in events}) == 2, f"want an ejection in each worker: {events}"
    finally:
        for proc in procs:
            proc.stop()
