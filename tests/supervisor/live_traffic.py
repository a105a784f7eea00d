"""Live-traffic tools for the balancing and health tests: real clients, counting backends.

Owns what those tests share: demo backend processes started with any option,
one-shot HTTP/1.1 requests (stdlib http.client, a fresh connection each, so the
kernel spreads them over both workers), bursts of them from a thread pool, the
share of answers per backend, a `/metrics` scrape, and `CountingEcho`, a real TCP
echo server in the test process that counts the connections that carried data
(health probes connect and close without data, so they are not counted) and can be
killed and restarted on the same port. It must never reach into the gateway's
processes other than through its sockets and `gatewayctl`.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from running_gateway import ROOT, wait_for_port


class DemoProcess:
    """`tools.demo_backends` serving HTTP on `http_ports`, with extra options."""

    def __init__(self, http_ports: list[int], *options: str) -> None:
        args = [sys.executable, "-m", "tools.demo_backends", *options]
        for p in http_ports:
            args += ["--http", f"127.0.0.1:{p}"]
        self.proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.DEVNULL)
        for p in http_ports:
            wait_for_port(p)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    backend: str  # the demo backend's `x-backend` ("127.0.0.1:PORT"), "" if absent


def http_get(
    port: int,
    path: str = "/",
    headers: dict[str, str] | None = None,
    *,
    source_ip: str | None = None,
    cpu: int | None = None,
) -> Answer:
    """One GET on a fresh connection to the gateway (from `source_ip`, any 127/8 address).

    The gateway's per-CPU sockets carry the SO_INCOMING_CPU hint, so on loopback the
    worker that accepts is the one on the CPU the client sent from: `cpu` pins the
    calling thread there for the request, to reach a chosen worker.
    """
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source_ip, 0) if source_ip else None
    )
    previous = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # 0 is the calling thread
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return Answer(resp.status, resp.getheader("x-backend") or "")
    finally:
        conn.close()
        if cpu is not None:
            os.sched_setaffinity(0, previous)


def burst(requests: Iterable[Callable[[], Answer]], *, concurrency: int = 8) -> list[Answer]:
    """Run every request callable on `concurrency` client threads; answers in order."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda call: call(), requests))


def backend_of(port: int) -> str:
    return f"127.0.0.1:{port}"


def shares(answers: list[Answer], ports: list[int]) -> dict[int, float]:
    """Share of the 200 answers per backend port (a non-200 answer fails the caller's check)."""
    counts = Counter(a.backend for a in answers if a.status == 200)
    total = sum(counts.values()) or 1
    return {p: counts[backend_of(p)] / total for p in ports}


def scrape(admin_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the supervisor's /metrics, keyed by (name, sorted labels)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, f"/metrics answered {resp.status}"
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def upstream_errors(admin_port: int, listener: str, backend: str | None = None) -> float:
    """Sum of expressgateway_upstream_errors_total for `listener` (and `backend` if given)."""
    total = 0.0
    for (name, labels), value in scrape(admin_port).items():
        lab = dict(labels)
        if name != "expressgateway_upstream_errors_total" or lab.get("listener") != listener:
            continue
        if backend is None or lab.get("backend") == backend:
            total += value
    return total


class CountingEcho:
    """A real TCP echo server on 127.0.0.1:`port` that counts connections carrying data."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.served = 0  # connections that sent at least one byte
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.start()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(256)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def kill(self) -> None:
        """Die like a crashed process: refuse new connections, reset the live ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                conn.close()
            except OSError:
                pass

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # killed
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        counted = False
        try:
            while data := conn.recv(65536):
                if not counted:
                    counted = True
                    with self._lock:
                        self.served += 1
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


@dataclass(slots=True)
class EchoResult:
    started_at: float
    ok: bool
    error: str
    took_s: float


def echo_through(port: int, payload: bytes, timeout_s: float = 5.0) -> EchoResult:
    """One client connection through the gateway: send, half-close, read to EOF, compare."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
        got = b"".join(chunks)
        ok = got == payload
        error = "" if ok else f"echoed {len(got)} of {len(payload)} bytes"
    except OSError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return EchoResult(started, ok, error, time.monotonic() - started)


class SteadyLoad:
    """Client threads opening echo connections through the gateway until stopped."""

    def __init__(self, port: int, *, clients: int = 2, pause_s: float = 0.01) -> None:
        self.port = port
        self.pause_s = pause_s
        self.results: list[EchoResult] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)
        ]
        for t in self._threads:
            t.start()

    def _run(self, n: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            self.results.append(echo_through(self.port, f"client{n}-{seq}\n".encode()))
            time.sleep(self.pause_s)

    def stop(self) -> list[EchoResult]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)
        return self.results
