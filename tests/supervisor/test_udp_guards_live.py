"""The UDP proxy's guards against abuse, performed against the real gateway (issue 17):
a source over its new-session rate, a backend that would amplify a forged request, and
a backend name whose DNS lookups hang — each time another client on the same worker
is served normally. Clients are pinned to CPU 0, so one worker takes everything."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from running_gateway import ROOT, DemoBackends, free_port
from test_udp_listener import ask, client, metric, pinned, scrape, udp_config

RATE = 20


@pytest.fixture
def echo_ports() -> Iterator[list[int]]:
    ports = [free_port(socket.SOCK_DGRAM)]
    backends = DemoBackends(udp_echo=ports)
    yield ports
    backends.stop()


def test_a_source_over_its_session_rate_is_cut_and_another_source_is_served(
    gateway_factory: type, echo_ports: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    admin = free_port()
    gw = gateway_factory.start(
        udp_config(port, echo_ports, udp=f"new_sessions_per_source_per_s = {RATE}\n", admin=admin)
    )
    assert gw is not None
    with pinned(0):
        flood = [client() for _ in range(200)]  # 200 new sessions from 127.0.0.1 at once
        try:
            for i, s in enumerate(flood):
                s.sendto(b"flood %d" % i, ("127.0.0.1", port))
            time.sleep(1.0)  # every reply that will come has come
            answered = 0
            for s in flood:
                s.setblocking(False)
                try:
                    s.recvfrom(65535)
                    answered += 1
                except BlockingIOError:
                    pass
            # The burst (RATE) plus what refilled while the flood was read, never all.
            assert RATE <= answered < 100, answered
            with client("127.0.0.2") as other:  # another source, same worker: untouched
                for n in range(5):
                    assert ask(other, port, b"hello %d" % n).peer
        finally:
            for s in flood:
                s.close()
    samples = scrape(admin)
    assert (
        metric(samples, "expressgateway_security_rejections_total", reason="udp_source_rate") >= 100
    )


class Amplifier:
    """A UDP backend that answers `amp...` with 20 datagrams of 1000 bytes (an open
    resolver's ANY answer, say) and anything else with two copies of it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            replies = [b"A" * 1000] * 20 if data.startswith(b"amp") else [data, data]
            for r in replies:
                self.sock.sendto(r, addr)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def amplifier() -> Iterator[Amplifier]:
    a = Amplifier()
    yield a
    a.close()


def test_replies_never_exceed_the_amplification_factor(
    gateway_factory: type, amplifier: Amplifier
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    admin = free_port()
    gateway_factory.start(
        udp_config(port, [amplifier.port], udp="reply_amplification_factor = 10\n", admin=admin)
    )
    with pinned(0), client() as attacker, client() as normal:
        attacker.sendto(b"amp" + b"x" * 97, ("127.0.0.1", port))  # 100 bytes, 128 on the wire
        got = []
        attacker.settimeout(1.0)
        try:
            while True:
                got.append(len(attacker.recvfrom(65535)[0]))
        except TimeoutError:
            pass
        wire_out = sum(n + 28 for n in got)
        assert 0 < wire_out <= 10 * 128, got  # one 1000-byte reply fits, the other 19 do not
        normal.settimeout(5.0)
        for n in range(5):  # a modest 2x protocol on the same worker passes untouched
            payload = b"ok %d " % n + b"y" * 40
            normal.sendto(payload, ("127.0.0.1", port))
            assert [normal.recvfrom(65535)[0] for _ in range(2)] == [payload, payload]
    samples = scrape(admin)
    assert (
        metric(samples, "expressgateway_security_rejections_total", reason="udp_reply_budget") >= 19
    )


SCENARIO = Path(__file__).with_name("udp_dns_scenario.py")


@pytest.mark.root
@pytest.mark.slow
def test_a_hanging_backend_name_never_stalls_the_datagram_path(tmp_path: Path) -> None:
    """In a fresh network namespace whose DNS server swallows queries (2 s per lookup):
    a udp listener round-robins between a live backend and one whose name never resolves.
    Clients of the live backend are answered at once, while the dead name is looked up
    at most once per failure-cache interval (5 s) per worker, never per datagram."""
    out = subprocess.run(
        ["unshare", "--net", sys.executable, str(SCENARIO), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "RES_OPTIONS": "timeout:2 attempts:1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    latencies = report["latencies"]
    assert len(latencies) >= 15, report  # the live backend's share of 40 new sessions
    assert max(latencies) < 0.5, report  # nobody waited behind a 2 s lookup
    assert 1 <= report["lookups"] <= 4, report  # 2 workers x (start + one retry) at most
