"""The admin listener over real loopback TCP, with http.client (stdlib) as the peer."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import trio
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_families,
)
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import MetricsAggregator, SupervisorMetrics, WorkerMetrics
from supervisor.admin import AdminState, serve_admin
from supervisor.metrics_export import build_registry

TOKEN = "s3cret-token"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Admin:
    port: int
    state: AdminState
    aggregator: MetricsAggregator
    supervisor: SupervisorMetrics

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        def go() -> Reply:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request(method, path, headers=headers or {})
                resp = conn.getresponse()
                body = resp.read()
                return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
            finally:
                conn.close()

        return await trio.to_thread.run_sync(go)

    async def raw(self, payload: bytes, *, read_timeout_s: float = 3.0) -> bytes:
        """Send raw bytes, return everything the server says until it closes."""
        stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        async with stream:
            if payload:
                await stream.send_all(payload)
            out = b""
            with trio.fail_after(read_timeout_s):
                while chunk := await stream.receive_some(65536):
                    out += chunk
            return out


async def _start(nursery: trio.Nursery, **state_kw: object) -> Admin:
    aggregator = MetricsAggregator()
    supervisor = SupervisorMetrics("9.9.9")
    state = AdminState(build_registry(aggregator, supervisor), **state_kw)  # type: ignore[arg-type]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    await nursery.start(serve_admin, listeners[0], state)
    port = listeners[0].socket.getsockname()[1]
    return Admin(port, state, aggregator, supervisor)


@pytest.fixture
async def admin(nursery: trio.Nursery) -> AsyncIterator[Admin]:
    yield await _start(nursery, header_timeout_s=1.0)


def _feed(a: Admin) -> None:
    w0, w1 = WorkerMetrics(), WorkerMetrics()
    for _ in range(3):
        w0.request_done("web", "b1", 200, 0.003, 100, 1000)
    w1.request_done("web", "b1", 503, 0.2, 50, 0)
    w1.connection_opened("web")
    w1.upstream_error("web", "b1", "connect_refused")
    a.aggregator.update(0, w0.snapshot())
    a.aggregator.update(1, w1.snapshot())
    a.supervisor.reload_finished("success")
    a.supervisor.set_backend_health("web", "b1", True)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


async def test_metrics_text_format_has_exact_values(admin: Admin) -> None:
    _feed(admin)
    r = await admin.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    s = _samples(r.body.decode())
    lbl = frozenset
    assert (
        s[
            (
                "expressgateway_requests_total",
                lbl({"listener": "web", "backend": "b1", "code": "2xx"}.items()),
            )
        ]
        == 3
    )
    assert (
        s[
            (
                "expressgateway_requests_total",
                lbl({"listener": "web", "backend": "b1", "code": "5xx"}.items()),
            )
        ]
        == 1
    )
    assert (
        s[("expressgateway_bytes_total", lbl({"listener": "web", "direction": "in"}.items()))]
        == 350
    )
    assert (
        s[("expressgateway_bytes_total", lbl({"listener": "web", "direction": "out"}.items()))]
        == 3000
    )
    assert s[("expressgateway_connections_active", lbl({"listener": "web"}.items()))] == 1
    assert (
        s[
            (
                "expressgateway_upstream_errors_total",
                lbl({"listener": "web", "backend": "b1", "kind": "connect_refused"}.items()),
            )
        ]
        == 1
    )
    assert (
        s[("expressgateway_request_duration_seconds_count", lbl({"listener": "web"}.items()))] == 4
    )
    assert s[
        ("expressgateway_request_duration_seconds_sum", lbl({"listener": "web"}.items()))
    ] == pytest.approx(0.209)
    assert (
        s[
            (
                "expressgateway_request_duration_seconds_bucket",
                lbl({"listener": "web", "le": "0.005"}.items()),
            )
        ]
        == 3
    )
    assert (
        s[
            (
                "expressgateway_request_duration_seconds_bucket",
                lbl({"listener": "web", "le": "+Inf"}.items()),
            )
        ]
        == 4
    )
    assert s[("expressgateway_reloads_total", lbl({"result": "success"}.items()))] == 1
    assert (
        s[("expressgateway_backend_healthy", lbl({"listener": "web", "backend": "b1"}.items()))]
        == 1
    )
    assert s[("expressgateway_build_info", lbl({"version": "9.9.9"}.items()))] == 1
    # A worker exits: its counters stay, its gauges go.
    admin.aggregator.worker_gone(1)
    s = _samples((await admin.request("GET", "/metrics")).body.decode())
    assert (
        s[
            (
                "expressgateway_requests_total",
                lbl({"listener": "web", "backend": "b1", "code": "5xx"}.items()),
            )
        ]
        == 1
    )
    assert ("expressgateway_connections_active", lbl({"listener": "web"}.items())) not in s


async def test_metrics_openmetrics_negotiation(admin: Admin) -> None:
    _feed(admin)
    r = await admin.request(
        "GET",
        "/metrics",
        {"Accept": "application/openmetrics-text; version=1.0.0, text/plain;q=0.5"},
    )
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    text = r.body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in om_families(text)}
    reqs = families["expressgateway_requests"]
    assert reqs.type == "counter"
    values = {s.labels["code"]: s.value for s in reqs.samples if s.name.endswith("_total")}
    assert values == {"2xx": 3, "5xx": 1}


async def test_head_has_headers_but_no_body(admin: Admin) -> None:
    _feed(admin)
    r = await admin.request("HEAD", "/metrics")
    assert r.status == 200 and r.body == b""
    assert int(r.headers["content-length"]) > 100


async def test_token_required_for_metrics_only(nursery: trio.Nursery) -> None:
    a = await _start(nursery, api_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest().upper())
    a.state.ready = True
    r = await a.request("GET", "/metrics")
    assert r.status == 401 and "bearer" in r.headers["www-authenticate"].lower()
    assert (await a.request("GET", "/metrics", {"Authorization": "Bearer wrong"})).status == 401
    assert (await a.request("GET", "/metrics", {"Authorization": f"Basic {TOKEN}"})).status == 401
    assert (await a.request("GET", "/metrics", {"Authorization": "Bearer "})).status == 401
    ok = await a.request("GET", "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200 and b"expressgateway_build_info" in ok.body
    assert (await a.request("GET", "/metrics", {"Authorization": f"bearer {TOKEN}"})).status == 200
    for probe in ("/livez", "/healthz", "/readyz"):
        assert (await a.request("GET", probe)).status == 200


def test_token_hash_must_be_sha256_hex() -> None:
    with pytest.raises(ValueError):
        AdminState(
            build_registry(MetricsAggregator(), SupervisorMetrics("x")), api_token_sha256="abc"
        )


async def test_probes_follow_the_lifecycle(admin: Admin) -> None:
    async def status(path: str) -> tuple[int, str]:
        r = await admin.request("GET", path)
        return r.status, json.loads(r.body)["status"]

    assert await status("/livez") == (200, "starting")
    assert await status("/healthz") == (200, "starting")
    assert await status("/readyz") == (503, "starting")
    assert (await status("/startupz"))[0] == 503
    admin.state.boot_completed = True
    admin.state.ready = True
    assert await status("/readyz") == (200, "ok")
    assert (await status("/startupz"))[0] == 200
    admin.state.draining = True  # graceful stop begins: answerable, but not ready
    assert await status("/readyz") == (503, "draining")
    assert await status("/livez") == (200, "draining")
    assert (await status("/startupz"))[0] == 200


async def test_method_and_path_errors(admin: Admin) -> None:
    r = await admin.request("POST", "/metrics")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
    assert (await admin.request("DELETE", "/readyz")).status == 405
    assert (await admin.request("GET", "/nope")).status == 404
    assert (await admin.request("GET", "/readyz?verbose=1")).status == 503


async def test_keep_alive_serves_several_requests_on_one_connection(admin: Admin) -> None:
    req = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    out = await admin.raw(req * 3 + b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 4


async def test_junk_oversize_and_slow_peers_do_not_kill_the_server(admin: Admin) -> None:
    assert (
        await admin.raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(300))
    ).startswith(b"HTTP/1.1 400")
    assert (await admin.raw(b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
    huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n"
    assert (await admin.raw(huge)).startswith(b"HTTP/1.1 431")
    body = b"x" * 20_000
    big_post = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert (await admin.raw(big_post)).startswith(b"HTTP/1.1 413")
    # A half-sent head gets a 408 after the header timeout (1 s here) ...
    assert (await admin.raw(b"GET /metrics HTTP/1.1\r\nHost:")).startswith(b"HTTP/1.1 408")
    # ... an idle connection is closed silently.
    assert await admin.raw(b"") == b""
    # An abrupt close mid-request.
    stream = await trio.open_tcp_stream("127.0.0.1", admin.port)
    await stream.send_all(b"GET /metr")
    await trio.aclose_forcefully(stream)
    # Still serving.
    assert (await admin.request("GET", "/livez")).status == 200


async def test_over_the_cap_only_probes_are_answered(nursery: trio.Nursery) -> None:
    """A flood that fills the connection cap cannot fail the orchestrator's probes."""
    a = await _start(nursery, max_connections=2, probe_lane_connections=1, probe_lane_timeout_s=1.0)
    _feed(a)
    held = [
        await trio.open_tcp_stream("127.0.0.1", a.port, local_address=f"127.0.0.{2 + i}")
        for i in range(2)
    ]
    await trio.sleep(0.1)  # let the server accept both: the cap is full
    livez = await a.raw(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert livez.startswith(b"HTTP/1.1 200") and b"connection: close" in livez.lower()
    readyz = await a.raw(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert readyz.startswith(b"HTTP/1.1 503") and b'"ready": false' in readyz  # a real verdict
    busy = await a.raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert busy.startswith(b"HTTP/1.1 503") and b"only probes" in busy
    # The probe lane is bounded too: while one silent peer holds it, the next is closed;
    # the silent one is dropped after the lane's short deadline.
    silent = await trio.open_tcp_stream("127.0.0.1", a.port)
    await trio.sleep(0.1)
    assert await a.raw(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    with trio.fail_after(3):
        assert await silent.receive_some(100) == b""
    assert (await a.raw(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 200")
    for s in held:
        await s.aclose()
    await silent.aclose()
    await trio.sleep(0.1)
    assert (await a.request("GET", "/metrics")).status == 200


async def test_per_ip_cap_closes_the_excess_of_one_client_only(nursery: trio.Nursery) -> None:
    a = await _start(nursery, max_connections_per_ip=2)
    hog = [
        await trio.open_tcp_stream("127.0.0.1", a.port, local_address="127.0.0.9") for _ in range(2)
    ]
    await trio.sleep(0.1)
    third = await trio.open_tcp_stream("127.0.0.1", a.port, local_address="127.0.0.9")
    await third.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(3):
        assert await third.receive_some(100) == b""  # closed at once, unanswered
    await third.aclose()
    assert (await a.request("GET", "/livez")).status == 200  # another client: served
    assert (await a.request("GET", "/metrics")).status == 200
    await hog[0].aclose()
    await trio.sleep(0.1)
    again = await trio.open_tcp_stream("127.0.0.1", a.port, local_address="127.0.0.9")
    await again.send_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with trio.fail_after(3):
        assert (await again.receive_some(100)).startswith(b"HTTP/1.1 200")
    await again.aclose()
    await hog[1].aclose()


async def test_metrics_render_runs_off_the_event_loop(admin: Admin) -> None:
    """A render that takes a second (a huge exposition) leaves the loop free: probes and
    everything else the supervisor does on it go on meanwhile."""

    class Slow:
        def collect(self) -> Iterator[object]:
            time.sleep(1.0)  # stands in for rendering a very large registry
            return iter(())

    admin.state.registry.register(Slow())  # type: ignore[arg-type]
    lateness: list[float] = []

    async def tick() -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(0.01)
            lateness.append(trio.current_time() - before - 0.01)

    async with trio.open_nursery() as n:
        n.start_soon(tick)
        scrape_done = trio.Event()

        async def scrape() -> None:
            assert (await admin.request("GET", "/metrics")).status == 200
            scrape_done.set()

        started = trio.current_time()
        n.start_soon(scrape)
        await trio.sleep(0.3)  # the render is under way
        assert not scrape_done.is_set()
        probe_started = trio.current_time()
        assert (await admin.request("GET", "/livez")).status == 200
        assert trio.current_time() - probe_started < 0.8
        await scrape_done.wait()
        assert trio.current_time() - started >= 1.0
        n.cancel_scope.cancel()
    assert max(lateness) < 0.5, max(lateness)  # on the loop, it would be >= 1 s


async def test_render_failure_answers_500_and_keeps_serving(admin: Admin) -> None:
    class Broken:
        def collect(self) -> object:
            raise RuntimeError("collector bug")

    admin.state.registry.register(Broken())  # type: ignore[arg-type]
    assert (await admin.request("GET", "/metrics")).status == 500
    assert (await admin.request("GET", "/livez")).status == 200
