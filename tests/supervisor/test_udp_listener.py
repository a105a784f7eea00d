"""`protocol = "udp"` listeners end to end: the real gateway (2 workers), real UDP echo
backends (tools.demo_backends --udp-echo, which prefix `backend=H:P peer=H:P\\n` to each
echo), real client sockets on loopback.

Loopback datagrams are steered to the worker of the CPU the sender runs on (the per-CPU
sockets carry SO_INCOMING_CPU), so tests that must hit one worker pin the client thread.
No client retries anything: every request waits for its reply with a generous timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from running_gateway import BIN, DemoBackends, RunningGateway, free_port

REPLY_TIMEOUT_S = 5.0


@pytest.fixture
def udp_backends() -> Iterator[list[int]]:
    ports = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
    backends = DemoBackends(udp_echo=ports)
    yield ports
    backends.stop()


def udp_config(
    port: int,
    backends: list[int],
    *,
    udp: str = "",
    extra: str = "",
    admin: int | None = None,
    drain_timeout_ms: int = 2000,
) -> str:
    b = "".join(f'[[listeners.backends]]\naddress = "127.0.0.1:{p}"\n' for p in backends)
    metrics = f'[observability]\nmetrics_bind = "127.0.0.1:{admin}"\n' if admin else ""
    return f"""
[runtime]
drain_timeout_ms = {drain_timeout_ms}
{metrics}
[[listeners]]
name = "dgram"
address = "127.0.0.1:{port}"
protocol = "udp"
[listeners.udp]
{udp}
{extra}
{b}
"""


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def client(ip: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.settimeout(REPLY_TIMEOUT_S)
    return s


@contextlib.contextmanager
def fresh_clients() -> Iterator[Callable[[], socket.socket]]:
    """New client sockets that all stay open until the block ends. A closed socket's
    ephemeral port can be handed to the next one, whose datagrams would then join the
    gateway session still open for that address (a session is keyed by the client's
    address): tests that mean "a new session" must never reuse a port."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(client())


class Reply:
    def __init__(self, data: bytes, source: tuple[str, int]) -> None:
        head, _, self.body = data.partition(b"\n")
        fields = dict(part.split("=", 1) for part in head.decode().split())
        self.backend = fields["backend"]
        self.peer = fields["peer"]  # the gateway session's address as the backend saw it
        self.source = source


def ask(s: socket.socket, port: int, payload: bytes) -> Reply:
    s.sendto(payload, ("127.0.0.1", port))
    data, source = s.recvfrom(65535)
    reply = Reply(data, source)
    assert reply.body == payload
    assert source == ("127.0.0.1", port)  # replies come from the listening address
    return reply


def exchange_rounds(socks: list[socket.socket], port: int, rounds: int) -> list[list[Reply]]:
    """Each round: every socket sends, then every socket waits for its own reply."""
    replies: list[list[Reply]] = [[] for _ in socks]
    for r in range(rounds):
        for i, s in enumerate(socks):
            s.sendto(b"client-%d round-%d" % (i, r), ("127.0.0.1", port))
        for i, s in enumerate(socks):
            data, source = s.recvfrom(65535)
            reply = Reply(data, source)
            assert reply.body == b"client-%d round-%d" % (i, r)
            assert source == ("127.0.0.1", port)
            replies[i].append(reply)
    return replies


def scrape(admin: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
    finally:
        conn.close()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def metric(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lbl), v in samples.items()
        if n == name and all(dict(lbl).get(k) == want for k, want in labels.items())
    )


def active_sessions(gw: RunningGateway) -> dict[int, int]:
    time.sleep(1.2)  # one heartbeat
    return {w["id"]: w["active_connections"] for w in gw.ready_workers()}


def test_many_clients_are_answered_and_each_stays_in_its_session(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gw = gateway_factory.start(udp_config(port, udp_backends))
    socks = [client() for _ in range(50)]
    try:
        with pinned(0):  # one worker, one session table: round robin spreads, sessions stick
            replies = exchange_rounds(socks, port, rounds=20)
    finally:
        for s in socks:
            s.close()
    for per_client in replies:
        assert len(per_client) == 20
        assert len({r.backend for r in per_client}) == 1, "a client's session changed backend"
        assert len({r.peer for r in per_client}) == 1, "a client's session changed socket"
    used = {per_client[0].backend for per_client in replies}
    assert used == {f"127.0.0.1:{p}" for p in udp_backends}
    assert len({per_client[0].peer for per_client in replies}) == 50  # one session each
    assert active_sessions(gw)[0] == 50


def test_client_ip_hash_keeps_each_client_on_one_backend_across_workers(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gw = gateway_factory.start(
        udp_config(port, udp_backends, extra='[listeners.balancer]\npolicy = "maglev"\n')
    )
    cpus = sorted(os.sched_getaffinity(0))
    socks = [client(f"127.0.0.{10 + i}") for i in range(30)]
    backend_of: dict[int, set[str]] = {i: set() for i in range(len(socks))}
    try:
        for r in range(4):  # alternate CPUs: each client reaches both workers
            with pinned(cpus[r % len(cpus)]):
                for i, per_client in enumerate(exchange_rounds(socks, port, rounds=2)):
                    backend_of[i] |= {x.backend for x in per_client}
    finally:
        for s in socks:
            s.close()
    assert all(len(b) == 1 for b in backend_of.values()), backend_of
    assert len({next(iter(b)) for b in backend_of.values()}) == 2  # 30 IPs use both backends
    if len(cpus) >= 2:
        assert all(n > 0 for n in active_sessions(gw).values())  # both workers had sessions


def test_quic_cid_hash_sends_one_connection_id_to_one_backend(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gateway_factory.start(
        udp_config(
            port,
            udp_backends,
            extra='[listeners.balancer]\npolicy = "maglev"\nhash_key = "quic_cid"\n',
        )
    )
    backend_of_cid: dict[bytes, set[str]] = {}
    with fresh_clients() as new_client:
        for n in range(12):
            dcid = os.urandom(8)
            # A QUIC long header (RFC 9000 section 17.2): flags, version 1, DCID length, DCID.
            packet = b"\xc0\x00\x00\x00\x01\x08" + dcid + b"\x00" * 20 + b"%d" % n
            for _ in range(4):  # four source ports (sessions), one connection ID
                reply = ask(new_client(), port, packet)
                backend_of_cid.setdefault(dcid, set()).add(reply.backend)
    assert all(len(b) == 1 for b in backend_of_cid.values()), backend_of_cid
    assert len({next(iter(b)) for b in backend_of_cid.values()}) == 2


def test_idle_sessions_expire_and_active_ones_do_not(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gw = gateway_factory.start(
        udp_config(port, udp_backends, udp="session_idle_timeout_ms = 1000\n")
    )
    with pinned(0), client() as busy, client() as idle:
        first_idle = ask(idle, port, b"hello").peer
        first_busy = ask(busy, port, b"hello").peer
        assert ask(idle, port, b"again").peer == first_idle  # same session
        # The busy client talks every 0.2 s for 3 s (3 idle timeouts): never expires.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert ask(busy, port, b"tick").peer == first_busy
            time.sleep(0.2)
        # The last heartbeat (<= 1 s old) was sent after idle's session expired.
        assert {w["id"]: w["active_connections"] for w in gw.ready_workers()}[0] == 1
        # The idle client's session expired: its next datagram opens a new one.
        assert ask(idle, port, b"back").peer != first_idle
        deadline = time.monotonic() + 5.0  # both expire within ~1 s; heartbeats lag by 1 s
        while (active := active_sessions(gw)[0]) != 0:
            assert time.monotonic() < deadline, f"{active} sessions never expired"
        assert ask(busy, port, b"late").peer != first_busy


def test_a_flood_of_sources_keeps_the_table_bounded_and_recent_clients_served(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    admin = free_port()
    # The per-source session rate (one source IP here) is not what this test is about.
    gw = gateway_factory.start(
        udp_config(
            port,
            udp_backends,
            udp="max_sessions = 32\nnew_sessions_per_source_per_s = 0\n",
            admin=admin,
        )
    )
    pids = [w["pid"] for w in gw.ready_workers()]
    rss_before = sum(psutil.Process(p).memory_info().rss for p in pids)
    flood_sources = 0
    for _wave in range(4):  # 4 x 500 distinct source addresses, nobody waits for replies
        socks = [client() for _ in range(500)]
        for i, s in enumerate(socks):
            s.sendto(b"flood %d" % i, ("127.0.0.1", port))
        flood_sources += len(socks)
        time.sleep(0.2)
        for s in socks:
            s.close()
    active = active_sessions(gw)
    assert all(n <= 32 for n in active.values()), active
    assert sum(active.values()) >= 32  # at least one worker's table is full
    samples = scrape(admin)
    # A flood this fast overflows the listening sockets' receive buffers (the kernel drops
    # what the workers cannot read in time, more on a busy machine: a loaded run opened 384),
    # so count the sessions the workers opened: at least twice what the tables hold.
    opened = metric(samples, "expressgateway_connections_total", listener="dgram")
    assert 128 <= opened <= flood_sources
    evicted = metric(
        samples, "expressgateway_security_rejections_total", reason="udp_session_evicted"
    )
    assert evicted >= opened - 64, samples
    gauge = metric(samples, "expressgateway_connections_active", listener="dgram")
    assert gauge <= 64
    rss_after = sum(psutil.Process(p).memory_info().rss for p in pids)
    assert rss_after - rss_before < 24 * 1024 * 1024, (rss_before, rss_after)
    # Recent clients are served despite the flood (each evicts an old flood session).
    fresh = [client() for _ in range(20)]
    try:
        for per_client in exchange_rounds(fresh, port, rounds=3):
            assert len({r.peer for r in per_client}) in (1, 2)  # at most one worker switch
    finally:
        for s in fresh:
            s.close()


def test_icmp_refused_backend_is_ejected_by_passive_health(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    admin = free_port()
    dead = free_port(socket.SOCK_DGRAM)  # nothing listens: the kernel answers ICMP refused
    gw = gateway_factory.start(
        udp_config(
            port,
            [udp_backends[0], dead],
            extra="[listeners.outlier]\nconsecutive_failures = 2\n",
            admin=admin,
        )
    )
    with pinned(0), fresh_clients() as new_client:
        answered = 0
        for i in range(8):  # round robin: every other new session goes to the dead backend
            s = new_client()
            s.settimeout(2.0)  # the live backend answers well within it on a loaded machine
            try:
                assert ask(s, port, b"probe %d" % i).backend == f"127.0.0.1:{udp_backends[0]}"
                answered += 1
            except TimeoutError:
                pass
        assert 4 <= answered < 8
        # The dead backend is ejected now: every new session is served by the live one.
        for i in range(10):
            reply = ask(new_client(), port, b"after %d" % i)
            assert reply.backend == f"127.0.0.1:{udp_backends[0]}"
    time.sleep(1.2)
    samples = scrape(admin)
    refused = metric(
        samples,
        "expressgateway_upstream_errors_total",
        listener="dgram",
        backend=f"127.0.0.1:{dead}",
        kind="refused",
    )
    assert refused >= 2
    rows = {r["backend"]: r for r in gw.ctl_json("backends")["data"]}
    assert rows[f"127.0.0.1:{dead}"]["ejected_until_s"] > 0


class RequestLoad:
    """Threads doing request/response pairs over UDP, each waiting for its reply."""

    def __init__(self, port: int, *, threads: int = 4, sockets_per_thread: int = 5) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t, sockets_per_thread), daemon=True)
            for t in range(threads)
        ]

    def _run(self, t: int, n: int) -> None:
        socks = [client() for _ in range(n)]
        seq = 0
        try:
            while not self._stop.is_set():
                for i, s in enumerate(socks):
                    payload = b"t%d s%d #%d" % (t, i, seq)
                    try:
                        ask(s, self.port, payload)
                        self.ok += 1
                    except (OSError, AssertionError) as exc:
                        self.failures.append(f"{payload!r}: {exc!r}")
                        return
                seq += 1
        finally:
            for s in socks:
                s.close()

    def __enter__(self) -> RequestLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


@pytest.mark.slow
def test_reload_and_drain_during_traffic_lose_no_reply(
    gateway_factory: type, udp_backends: list[int]
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    gw = gateway_factory.start(
        udp_config(port, udp_backends, udp="session_idle_timeout_ms = 1000\n")
    )
    before = {w["id"]: w["pid"] for w in gw.ready_workers()}
    with RequestLoad(port) as load:
        time.sleep(0.5)
        out = gw.ctl("reload")
        assert out.returncode == 0, out.stderr
        time.sleep(0.5)
        out = gw.ctl("drain", "0", "--timeout", "2")
        assert out.returncode == 0, out.stderr
        time.sleep(1.0)
    assert load.failures == []
    assert load.ok > 200, f"only {load.ok} request/response pairs completed"
    after = {w["id"]: w["pid"] for w in gw.ready_workers()}
    assert after[0] != before[0] and after[1] != before[1]
    status = gw.ctl_json("status")["data"]
    assert status["generation"] >= 2 and status["reloads"]["ok"] == 1


def test_udp_listener_rejects_active_health_at_check(tmp_path: Path) -> None:
    config = tmp_path / "udp.toml"
    config.write_text(
        udp_config(free_port(socket.SOCK_DGRAM), [free_port(socket.SOCK_DGRAM)])
        + '[listeners.health]\nkind = "tcp"\n'
    )
    out = subprocess.run(
        [str(BIN / "expressgateway"), "--check", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "active health checks are not available for udp listeners" in out.stdout + out.stderr
