"""`python -m tools.bench memory`: resident memory per idle keep-alive HTTP/1.1 client
connection, ExpressGateway vs nginx vs HAProxy, same run.

Each proxy runs one worker (HAProxy: one thread) pinned to --proxy-cpus in front of the nginx
`return 200` backend (tools/bench/http1.py), with idle timeouts long enough to outlast the
measurement. The client (this process) opens --connections connections from 64 loopback
source addresses (ExpressGateway caps connections per client IP), sends one request on each,
reads its answer and leaves the connection open and idle. The figure is the growth of the
proxy's process-tree RSS (psutil) from before the first connection to after the last answer
(after a pause, so freed buffers settle), divided by the connections; then every connection
is closed and RSS read again (what the proxy gives back).
Owns: the client side of the idle connections and the table. Must never run under pytest,
or leave a process running (each proxy is stopped in a finally).
"""

from __future__ import annotations

import argparse
import resource
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tools.bench.http1 import UPSTREAM_IDLE_KEEPALIVE, _start_nginx, start_backend
from tools.bench.proxies import (
    Proxy,
    _spawn,
    _version,
    _wait_listening,
    add_run_arguments,
    cpu_list,
    start_expressgateway_with,
)
from tools.ports import free_port

PROXY_NAMES = ("expressgateway", "nginx", "haproxy")
SOURCES = 64  # 127.0.1.1 .. 127.0.1.64: ExpressGateway's per-IP cap is 1024 by default
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
SETTLE_S = 2.0
MAX_CONNECTIONS = 15_000  # connection caps of all three: room for --connections


@dataclass
class Result:
    name: str
    version: str
    connections: int
    rss_before_kib: float
    rss_idle_kib: float
    rss_after_close_kib: float

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_idle_kib - self.rss_before_kib) / self.connections


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, PROXY_NAMES, connections=10_000, harness="the backend")


def _tree_rss_kib(proxy: Proxy) -> float:
    root = psutil.Process(proxy.proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1024


def start_expressgateway(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.http]
pool_max_idle_per_backend = {UPSTREAM_IDLE_KEEPALIVE}
header_timeout_ms = 300000
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
    # Idle client connections hold no upstream descriptor (answered, pooled upstreams are
    # shared), so the cap "auto" derives from 2 descriptors per connection is too low here.
    extra = f"max_inflight_connections = {MAX_CONNECTIONS}\n"
    return start_expressgateway_with(workdir, "expressgateway-memory", listener, cpus, port, extra)


def start_nginx(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    body = f"""    keepalive_timeout 300s;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive {UPSTREAM_IDLE_KEEPALIVE};
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""
    proxy = _start_nginx(workdir, "nginx-memory", body, port, cpus, MAX_CONNECTIONS)
    proxy.name = "nginx"
    return proxy


def haproxy_max_connections() -> int:
    """HAProxy reserves two descriptors per connection (and a few) up front and refuses to
    start when the limit is lower: its cap is what this process's limit allows."""
    return min(MAX_CONNECTIONS, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 64) // 2)


def start_haproxy(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    maxconn = haproxy_max_connections()
    config = workdir / "haproxy-memory.cfg"
    config.write_text(
        f"""global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    option http-keep-alive
    http-reuse always
    maxconn {maxconn}
    timeout connect 5s
    timeout client 300s
    timeout server 60s

listen bench
    bind 127.0.0.1:{port}
    server backend 127.0.0.1:{backend_port}
"""
    )
    log_path = workdir / "haproxy-memory.log"
    proc = _spawn(["haproxy", "-db", "-f", str(config)], cpus, log_path)
    proxy = Proxy("haproxy", _version(["haproxy", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=1)


STARTERS = {
    "expressgateway": start_expressgateway,
    "nginx": start_nginx,
    "haproxy": start_haproxy,
}


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections, one answered request each, left open."""
    conns: list[socket.socket] = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((f"127.0.1.{1 + i % SOURCES}", 0))
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            s.sendall(REQUEST)
            answer = b""
            while not answer.endswith(b"ok"):  # the backend answers `200 "ok"`
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError(f"connection {i} closed before its answer: {answer!r}")
                answer += chunk
        except OSError as exc:
            s.close()
            for c in conns:
                c.close()
            raise RuntimeError(f"connection {i} of {count}: {exc!r}") from exc
        conns.append(s)
    return conns


def _measure(name: str, workdir: Path, backend_port: int, args: argparse.Namespace) -> Result:
    proxy = STARTERS[name](workdir, free_port(), backend_port, cpu_list(args.proxy_cpus))
    count = args.connections
    if name == "haproxy":
        count = min(count, haproxy_max_connections() - 32)
    conns: list[socket.socket] = []
    try:
        conns = _open_idle(proxy.port, 16)  # warm-up: pools, first allocations
        time.sleep(SETTLE_S)
        before = _tree_rss_kib(proxy)
        conns += _open_idle(proxy.port, count)
        time.sleep(SETTLE_S)
        idle = _tree_rss_kib(proxy)
        for s in conns[16:]:
            s.close()
        time.sleep(SETTLE_S)
        after = _tree_rss_kib(proxy)
        return Result(name, proxy.version, count, before, idle, after)
    finally:
        for s in conns:
            s.close()
        proxy.stop()


def render(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"Idle keep-alive connections: {args.connections} (one answered request each); "
        f"proxy on CPU {args.proxy_cpus}, 1 worker/thread; RSS of the proxy's process tree",
        "",
        f"{'proxy':<16} {'conns':>6} {'RSS before':>11} {'RSS idle':>11} {'KiB/conn':>9}"
        f" {'after close':>12}  version",
    ]
    for r in results:
        lines.append(
            f"{r.name:<16} {r.connections:>6} {r.rss_before_kib / 1024:>7.1f} MiB {r.rss_idle_kib / 1024:>7.1f} MiB"
            f" {r.kib_per_connection:>9.2f} {r.rss_after_close_kib / 1024:>8.1f} MiB  {r.version}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        raise SystemExit(f"unknown proxies {unknown}; choose from {list(STARTERS)}")
    # The proxies inherit this limit: an upstream descriptor per connection could be needed
    # (ExpressGateway sizes its connection cap from it), so twice the connections and a margin.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 4096
    if soft < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
        except (ValueError, OSError):  # not root: as far as the hard limit allows
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="eg-bench-memory-") as tmp:
        workdir = Path(tmp)
        backend = start_backend(workdir, free_port(), cpu_list(args.harness_cpus))
        try:
            for name in names:
                print(f"… {name}: {args.connections} idle connections", flush=True)
                results.append(_measure(name, workdir, backend.port, args))
        finally:
            backend.stop()
    print(render(results, args))
    return 0
