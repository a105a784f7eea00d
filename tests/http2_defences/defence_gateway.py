"""The gateway the HTTP/2 defence tests attack, and the bystanders that watch it.

One real gateway with one worker (so the attacker and every bystander share it) in front of
hypercorn serving tests/http_cells/asgi_backend.py (its access log says what reached the
backend). Listeners:

- ``main``: every ``[listeners.h2]`` threshold at its default (the original's);
- ``narrow``: ``max_concurrent_streams = 4`` (refusal without 256 streams in flight);
- ``stall``: short body / idle / keep-alive timeouts (the zero-window stall in seconds).

``Bystanders`` are a well-behaved HTTP/2 client (httpx, prior knowledge) and an HTTP/1.1
one that keep requesting from ``main`` in a thread; ``RssWatch`` samples the worker's RSS.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from hypercorn_process import hypercorn_process
from prometheus_client.parser import text_string_to_metric_families
from running_gateway import RunningGateway, free_port, wait_for_port

MiB = 1024 * 1024
STALL_BODY_TIMEOUT_MS = 1000
STALL_IDLE_TIMEOUT_MS = 1500
NARROW_STREAMS = 4


@dataclass
class DefenceGateway:
    gateway: RunningGateway
    ports: dict[str, int]  # listener name -> port
    metrics_port: int
    backend_log: Path
    worker_pid: int
    baseline_rss: int

    def rss(self) -> int:
        return int(psutil.Process(self.worker_pid).memory_info().rss)

    def backend_requests(self) -> str:
        """hypercorn's access log: one line per request that reached the backend."""
        return self.backend_log.read_text(errors="replace") if self.backend_log.exists() else ""

    def forwarded(self, tag: str) -> list[str]:
        """Evidence that a request whose target holds ``tag`` reached the backend: hypercorn
        logged it, or the gateway's access record names a backend for it (hypercorn does not
        log a request line it could not parse)."""
        backend = [line for line in self.backend_requests().splitlines() if tag in line]
        gateway = [
            f"gateway: {e['path']} -> {e['backend']} {e['status']}"
            for e in self.gateway.events("access")
            if tag in str(e.get("path")) and e.get("backend")
        ]
        return backend + gateway

    def rejections(self) -> dict[str, float]:
        """expressgateway_security_rejections_total by reason, read from /metrics."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                if s.name == "expressgateway_security_rejections_total":
                    counts[s.labels["reason"]] = s.value
        return counts

    def wait_rejection(self, reason: str, at_least: float, timeout_s: float = 6.0) -> float:
        """The counter for ``reason`` once it reaches ``at_least`` (workers report periodically)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.rejections().get(reason, 0.0)
            if value >= at_least or time.monotonic() > deadline:
                return value
            time.sleep(0.2)


def _config(ports: dict[str, int], backend_port: int, metrics_port: int) -> str:
    per_listener = {
        "main": "",
        "narrow": f"[listeners.h2]\nmax_concurrent_streams = {NARROW_STREAMS}\n",
        "stall": (
            f"[listeners.http]\nbody_timeout_ms = {STALL_BODY_TIMEOUT_MS}\n"
            f"[listeners.h2]\nidle_timeout_ms = {STALL_IDLE_TIMEOUT_MS}\n"
            "keepalive_interval_ms = 1000\nkeepalive_timeout_ms = 1000\n"
        ),
    }
    listeners = "".join(
        f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{ports[name]}"
protocol = "h1"
{extra}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
        for name, extra in per_listener.items()
    )
    return f"""
[runtime]
workers = 1
drain_timeout_ms = 2000

[observability]
log_format = "json"
metrics_bind = "127.0.0.1:{metrics_port}"
{listeners}
"""


@contextmanager
def running_defence_gateway(tmp: Path) -> Iterator[DefenceGateway]:
    backend_port, metrics_port = free_port(), free_port()
    ports = {name: free_port() for name in ("main", "narrow", "stall")}
    backend_log = tmp / "backend-access.log"
    args = ["--bind", f"127.0.0.1:{backend_port}", "--access-logfile", str(backend_log)]
    with hypercorn_process(args, backend_port, worker=("--workers", "1")):
        gateway = RunningGateway(tmp, _config(ports, backend_port, metrics_port))
        try:
            gateway.start()
            wait_for_port(metrics_port)
            (worker,) = gateway.ready_workers()
            pid = int(worker["pid"])
            # Warm up both fronts so the baseline includes what serving normally costs.
            with httpx.Client(http1=False, http2=True, timeout=10) as c:
                for _ in range(20):
                    c.get(f"http://127.0.0.1:{ports['main']}/headers").raise_for_status()
            with httpx.Client(timeout=10) as c:
                for _ in range(20):
                    c.get(f"http://127.0.0.1:{ports['main']}/headers").raise_for_status()
            baseline = int(psutil.Process(pid).memory_info().rss)
            yield DefenceGateway(gateway, ports, metrics_port, backend_log, pid, baseline)
        finally:
            gateway.stop()


@dataclass
class Bystanders:
    """Well-behaved clients on the attacked worker: one HTTP/2 connection (httpx, prior
    knowledge, kept open) and HTTP/1.1 requests, in turn, until stopped."""

    port: int
    ok_h2: int = 0
    ok_h1: int = 0
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    after_attack: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/headers"
        with (
            httpx.Client(http1=False, http2=True, timeout=5) as h2c,
            httpx.Client(timeout=5) as h1c,
        ):
            while not self._stop.is_set():
                for client, version in ((h2c, "HTTP/2"), (h1c, "HTTP/1.1")):
                    started = time.monotonic()
                    try:
                        r = client.get(url)
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{version}: {exc!r}")
                        continue
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    if r.status_code != 200 or r.http_version != version:
                        self.failures.append(f"{version}: {r.status_code} {r.http_version}")
                    elif version == "HTTP/2":
                        self.ok_h2 += 1
                    else:
                        self.ok_h1 += 1
                time.sleep(0.01)

    def _served(self, h2: int, h1: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.failures:
            if self.ok_h2 >= h2 and self.ok_h1 >= h1:
                return True
            time.sleep(0.01)
        return False

    @contextmanager
    def running(self) -> Iterator[Bystanders]:
        """Both clients are served before the attack starts and twice more after it."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            self._served(1, 1, 5.0)
            yield self
        finally:
            self.after_attack = self._served(self.ok_h2 + 2, self.ok_h1 + 2, 5.0)
            self._stop.set()
            thread.join(timeout=10)

    def assert_served(self, *, max_latency_s: float = 2.0) -> None:
        assert not self.failures, f"a well-behaved client was failed: {self.failures[:5]}"
        assert self.after_attack, f"bystanders not served after the attack: {self}"
        assert self.slowest_s < max_latency_s, f"bystander waited {self.slowest_s:.2f}s"


@dataclass
class RssWatch:
    """The worker's peak RSS while the attack runs (sampled every 10 ms)."""

    pid: int
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            self.peak = max(self.peak, int(proc.memory_info().rss))
            time.sleep(0.01)

    @contextmanager
    def running(self) -> Iterator[RssWatch]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            time.sleep(0.1)
            self._stop.set()
            thread.join(timeout=5)


@contextmanager
def under_attack(gw: DefenceGateway, *, rss_growth_bytes: int) -> Iterator[Bystanders]:
    """Bystanders served and worker RSS within ``baseline + rss_growth_bytes`` throughout."""
    bystanders = Bystanders(gw.ports["main"])
    watch = RssWatch(gw.worker_pid)
    with watch.running(), bystanders.running():
        yield bystanders
    bystanders.assert_served()
    growth = watch.peak - gw.baseline_rss
    print(f"worker RSS peak {watch.peak / MiB:.1f} MiB, {growth / MiB:+.1f} MiB over baseline")
    assert watch.peak <= gw.baseline_rss + rss_growth_bytes, (
        f"worker RSS peaked {growth / MiB:.1f} MiB over its baseline "
        f"(bound {rss_growth_bytes / MiB:.0f} MiB)"
    )
    assert gw.worker_pid in [int(w["pid"]) for w in gw.gateway.ready_workers()], (
        "the attacked worker must still be the one serving"
    )
