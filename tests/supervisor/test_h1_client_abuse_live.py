"""Issue 17, "prove what exists": abusive HTTP/1.1 clients against one real worker.

- slowloris that trickles one header byte per second: the trickle does not extend
  `header_timeout_ms`; the client gets 408 and is closed at the deadline;
- a client that never reads its response (zero window): the worker stops reading the
  backend once its socket buffer is full (bounded memory), and disconnects the client and
  the backend when no room appeared for `body_timeout_ms`;
- memory per idle keep-alive connection: 1,000 of them on one worker, RSS measured
  (the figure is printed; the bound asserted is the one conf/README.md §8 states).
Meanwhile ordinary requests on the same worker are answered as usual.
"""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Iterator

import psutil
import pytest
from hardening_peers import ConnRecord, EndlessHttpServer, http_get, read_status
from running_gateway import DemoBackends, RunningGateway, free_port

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_MS = 2000
BODY_TIMEOUT_MS = 2000
IDLE_CONNECTIONS = 1000
# The stated bound (conf/README.md §8): RSS per idle keep-alive HTTP/1.1 connection.
RSS_PER_IDLE_CONNECTION_MAX_BYTES = 12 * 1024  # measured 9.5-10.0 KiB (goal: 10 KiB)
REQUEST = b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n"


class AbuseGateway:
    def __init__(self, gw: RunningGateway, ports: dict[str, int], bulk: EndlessHttpServer):
        self.gw, self.ports, self.bulk = gw, ports, bulk
        (worker,) = gw.workers()
        self.worker = psutil.Process(worker["pid"])

    def rss(self) -> int:
        return int(self.worker.memory_info().rss)


@pytest.fixture(scope="module", params=[True, False], ids=["h1_fast_path", "general_core"])
def abuse(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AbuseGateway]:
    tmp = tmp_path_factory.mktemp("abuse")
    fast = "true" if request.param else "false"
    http_port = free_port()
    demo = DemoBackends(http=[http_port])
    bulk = EndlessHttpServer().start()
    ports = {"web": free_port(), "bulk": free_port(), "idle": free_port()}
    config = f"""
[runtime]
workers = 1

[observability]
access_log = false

[[listeners]]
name = "web"
address = "127.0.0.1:{ports["web"]}"
protocol = "h1"
[listeners.http]
header_timeout_ms = {HEADER_TIMEOUT_MS}
h1_fast_path = {fast}
[[listeners.backends]]
address = "127.0.0.1:{http_port}"

[[listeners]]
name = "bulk"
address = "127.0.0.1:{ports["bulk"]}"
protocol = "h1"
[listeners.http]
body_timeout_ms = {BODY_TIMEOUT_MS}
h1_fast_path = {fast}
[[listeners.backends]]
address = "127.0.0.1:{bulk.port}"

[[listeners]]
name = "idle"
address = "127.0.0.1:{ports["idle"]}"
protocol = "h1"
[listeners.http]
header_timeout_ms = 120000
h1_fast_path = {fast}
[[listeners.backends]]
address = "127.0.0.1:{http_port}"
"""
    gw = RunningGateway(tmp, config).start()
    try:
        yield AbuseGateway(gw, ports, bulk)
    finally:
        gw.stop()
        bulk.stop()
        demo.stop()


def test_slowloris_trickling_one_byte_per_second_is_cut_at_the_header_timeout(
    abuse: AbuseGateway,
) -> None:
    port = abuse.ports["web"]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
    answer = b""
    ordinary = []
    with s:
        for _ in range(10):  # at most 10 s; the deadline is 2 s
            readable, _, _ = select.select([s], [], [], 1.0)
            if readable:
                try:
                    answer = s.recv(65536)
                except ConnectionResetError:
                    answer = b"<reset>"
                break
            try:
                s.sendall(b"a")  # one more header byte, one second later
            except OSError:
                break
            t = time.monotonic()
            ordinary.append((http_get(port), time.monotonic() - t))  # the same worker serves
        closed_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert HEADER_TIMEOUT_MS / 1000 - 0.2 < closed_after < HEADER_TIMEOUT_MS / 1000 + 1.2
    assert ordinary and all(status == 200 and took < 0.5 for status, took in ordinary), ordinary


def test_client_that_never_reads_is_disconnected_with_memory_bounded(
    abuse: AbuseGateway,
) -> None:
    rss_before = abuse.rss()
    already = len(abuse.bulk.conns)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    s.connect(("127.0.0.1", abuse.ports["bulk"]))
    started = time.monotonic()
    s.sendall(REQUEST)
    with s:
        deadline = started + BODY_TIMEOUT_MS / 1000 + 3
        while len(abuse.bulk.conns) == already and time.monotonic() < deadline:
            time.sleep(0.05)
        backend: ConnRecord = abuse.bulk.conns[already]
        peak_rss = rss_before
        while backend.closed_at is None and time.monotonic() < deadline:
            peak_rss = max(peak_rss, abuse.rss())
            assert http_get(abuse.ports["web"]) == 200  # the same worker serves others
            time.sleep(0.2)
        assert backend.closed_at is not None, "the stalled exchange was never ended"
        stalled_for = backend.closed_at - started
        # the stall begins once the buffers are full (milliseconds); then body_timeout_ms
        assert BODY_TIMEOUT_MS / 1000 - 0.2 < stalled_for < BODY_TIMEOUT_MS / 1000 + 1.5
        # the backend could only push what fits in the kernel's socket buffers
        assert backend.received < 32 * 1024 * 1024, backend.received
        assert peak_rss - rss_before < 16 * 1024 * 1024, (rss_before, peak_rss)
        # the client finds its connection ended once it reads again (truncated body, no
        # chunked terminator: it cannot mistake it for a complete response)
        s.settimeout(5)
        tail = b""
        try:
            while data := s.recv(1 << 20):
                tail = (tail + data)[-16:]
        except ConnectionResetError:
            pass
        assert not tail.endswith(b"0\r\n\r\n")


def _raise_own_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (hard == resource.RLIM_INFINITY and soft < needed):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_rss_of_idle_keepalive_connections(abuse: AbuseGateway) -> None:
    port = abuse.ports["idle"]
    _raise_own_nofile(IDLE_CONNECTIONS + 512)

    def open_served(n: int, octet: int) -> list[socket.socket]:
        conns = []
        for i in range(n):  # 100 sources: far from the per-IP cap
            s = socket.create_connection(
                ("127.0.0.1", port), timeout=5, source_address=(f"127.0.{octet}.{1 + i % 100}", 0)
            )
            s.sendall(REQUEST)
            conns.append(s)
        assert [read_status(s, 5.0) for s in conns] == [200] * n
        return conns

    warm = open_served(200, 50)  # allocator arenas, pool, caches: not per-connection costs
    for s in warm:
        s.close()
    time.sleep(0.5)
    before = abuse.rss()
    held = open_served(IDLE_CONNECTIONS, 51)
    try:
        time.sleep(0.5)
        after = abuse.rss()
        per_connection = (after - before) / IDLE_CONNECTIONS
        print(
            f"\nRSS: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB with "
            f"{IDLE_CONNECTIONS} idle keep-alive H1 connections: "
            f"{per_connection / 1024:.1f} KiB each"
        )
        assert per_connection < RSS_PER_IDLE_CONNECTION_MAX_BYTES
        # they are alive: each answers another request
        for s in held[:: IDLE_CONNECTIONS // 10]:
            s.sendall(REQUEST)
            assert read_status(s, 5.0) == 200
    finally:
        for s in held:
            s.close()
