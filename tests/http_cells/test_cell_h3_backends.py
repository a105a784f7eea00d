"""A real gateway balancing over several HTTP/3 backends (the scripted aioquic server, one
process each): round robin spreads requests, active health over H3 takes a backend out and
puts it back, and a killed backend's requests are retried elsewhere, or answered 503 when
no backend is left. Evidence from the outside only: which backend answered (its name is in
every body), `gatewayctl backends`, HTTP statuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from h3_scripted_backend import ScriptedH3
from running_gateway import RunningGateway, free_port

from tools.make_certs import make_certs

HEALTH = """[listeners.health]
kind = "http"
path = "/healthz"
interval_ms = 250
timeout_ms = 250
rise = 2
fall = 2
"""


@dataclass
class H3Gateway:
    gateway: RunningGateway
    ports: dict[str, int]  # listener -> port
    backends: dict[str, ScriptedH3]  # name -> process
    health_files: dict[str, Path]

    def get(self, listener: str, path: str = "/") -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.ports[listener]}{path}", timeout=10)

    def names(self, listener: str, n: int) -> list[str]:
        out = []
        for _ in range(n):
            r = self.get(listener)
            assert r.status_code == 200, r.text
            out.append(r.text.split()[0])
        return out

    def health(self, name: str) -> str:
        answer = self.gateway.ctl_json("backends")
        assert answer["ok"], answer
        backend = f"127.0.0.1:{self.backends[name].port}"
        [row] = [r for r in answer["data"] if r["backend"] == backend]
        return str(row["health"])


def _backends_toml(servers: list[ScriptedH3], ca: Path) -> str:
    return "".join(
        f"""[[listeners.backends]]
address = "127.0.0.1:{s.port}"
protocol = "h3"
[listeners.backends.tls]
ca_path = "{ca}"
server_name = "localhost"
"""
        for s in servers
    )


@pytest.fixture(scope="module")
def h3gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[H3Gateway]:
    tmp = tmp_path_factory.mktemp("h3-backends")
    certs = make_certs(tmp / "certs")
    files = {n: tmp / f"{n}.sick" for n in ("a", "b", "c")}
    servers: dict[str, ScriptedH3] = {}
    try:
        for name in ("a", "b", "c", "d", "e"):
            servers[name] = ScriptedH3(certs, name=name, health_file=str(files.get(name, "")))
        for server in servers.values():
            server.wait_ready()
        ports = {"rr": free_port(), "retry": free_port()}
        rr = [servers[n] for n in ("a", "b", "c")]
        retry = [servers[n] for n in ("d", "e")]
        config = f"""
[runtime]
workers = 1
drain_timeout_ms = 2000

[[listeners]]
name = "rr"
address = "127.0.0.1:{ports["rr"]}"
protocol = "h1"
[listeners.balancer]
policy = "round_robin"
{HEALTH}
{_backends_toml(rr, certs.ca_cert)}

[[listeners]]
name = "retry"
address = "127.0.0.1:{ports["retry"]}"
protocol = "h1"
{_backends_toml(retry, certs.ca_cert)}
"""
        gateway = RunningGateway(tmp, config)
        try:
            gateway.start()
            yield H3Gateway(gateway, ports, servers, files)
        finally:
            gateway.stop()
    finally:
        for server in servers.values():
            server.kill()


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.1f}s")
        time.sleep(0.05)


def test_round_robin_spreads_requests_evenly_over_three_h3_backends(h3gw: H3Gateway) -> None:
    wait_until("all up", lambda: all(h3gw.health(n) == "up" for n in ("a", "b", "c")))
    names = h3gw.names("rr", 9)
    assert sorted(names) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert names[:3] == names[3:6] == names[6:]  # a fixed rotation


def test_active_health_over_h3_takes_a_backend_out_and_back(h3gw: H3Gateway) -> None:
    h3gw.health_files["b"].touch()  # b's /healthz now answers 503
    try:
        wait_until("b down", lambda: h3gw.health("b") == "down")
        assert "b" not in h3gw.names("rr", 6)
    finally:
        h3gw.health_files["b"].unlink()
    wait_until("b up", lambda: h3gw.health("b") == "up")
    assert "b" in h3gw.names("rr", 6)


def test_a_stream_an_h3_backend_goaways_is_retried_on_another(h3gw: H3Gateway) -> None:
    """d refuses the first /goaway/d stream it sees with an H3 GOAWAY (not processed) and
    never answers it: the client sees only 200s (without the retry it would wait out the
    head timeout), and d answers later requests on a new connection."""
    before = {r.text.split()[0]: r.text.split()[1] for r in (h3gw.get("retry") for _ in range(2))}
    answers = [h3gw.get("retry", "/goaway/d") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    after = {r.text.split()[0]: r.text.split()[1] for r in answers}
    assert set(before) == {"d", "e"} and "e" in after
    if "d" in after:
        assert after["d"] != before["d"]  # the GOAWAY'd connection took no new stream


def test_a_killed_h3_backend_is_retried_elsewhere_then_503_when_none_is_left(
    h3gw: H3Gateway,
) -> None:
    assert set(h3gw.names("retry", 4)) == {"d", "e"}  # both pooled, connections open
    h3gw.backends["e"].kill()
    # e's pooled connection learns of the death from the kernel (ICMP port unreachable on
    # its socket) or fails to connect: every GET is retried on d.
    assert h3gw.names("retry", 6) == ["d"] * 6
    h3gw.backends["d"].kill()
    started = time.monotonic()
    r = h3gw.get("retry")
    # Both backends tried and failed: the core's answer is 503 "no backend" (a single
    # backend's own failure would be a 502), promptly: refused, not a timeout.
    assert r.status_code == 503, r.text
    assert time.monotonic() - started < 3
