"""`python -m tools.bench h3`: HTTP/3 front requests/s and CPU-µs per request, ExpressGateway
H3→H1 beside an aioquic HTTP/3 server answering directly (the floor of the library), same
run.

Rows: ExpressGateway with a `quic` listener (QUIC v1 + HTTP/3 terminated, HTTP/1.1
keep-alive to an nginx `return 200` backend, as in the other benches); the floor
(`h3_floor_server`: aioquic's asyncio `serve` answering every request with a fixed 200
itself, no proxying), which a gateway on aioquic cannot go below. h2load here is built
without QUIC, so the load is `h3_load` (aioquic's client, --connections connections x
--streams requests in flight, closed loop) in its own process on --harness-cpus beside the
backend; each server runs one process pinned to --proxy-cpus. Rounds interleave the two
(see tools/bench/http1.py); CPU is the server's process tree (psutil) over the round.
Prints medians with their ranges and the gateway/floor ratios (medians of per-round
ratios); issue 14's target is a gateway at most 2x the floor.
Owns: the H3 configs, the load runs and the table. Must never run under pytest or leave a
process running (everything is stopped in a finally).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.config import features
from tools.bench.h3_load import check
from tools.bench.http1 import UPSTREAM_IDLE_KEEPALIVE, Sample, start_backend
from tools.bench.proxies import (
    READY_TIMEOUT_S,
    Proxy,
    ProxyStartError,
    _spawn,
    _version,
    add_run_arguments,
    cpu_list,
    start_expressgateway_with,
)
from tools.make_certs import make_certs
from tools.ports import free_port

GATEWAY = "expressgateway-h3h1"
FLOOR = "floor-aioquic-h3"
TARGET_RATIO = 2.0


class H3LoadError(RuntimeError):
    """The load generator failed, or saw failed requests."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=8.0, help="per round (default 8)")
    parser.add_argument(
        "--streams", type=int, default=10, help="requests in flight per connection (default 10)"
    )
    add_run_arguments(parser, (GATEWAY, FLOOR), connections=4, harness="h3_load and the backend")


def _wait_h3(proxy: Proxy) -> Proxy:
    """Until one GET over HTTP/3 gets 200 "ok" (the gateway: through to the backend)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proxy.proc.poll() is not None:
            raise ProxyStartError(
                f"{proxy.name} exited {proxy.proc.returncode}: {proxy.log_tail()}"
            )
        try:
            status, body = asyncio.run(check(proxy.port))
            if status == 200 and body == b"ok":
                return proxy
            last = f"status {status} body {body[:60]!r}"
        except Exception as exc:  # not serving yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    proxy.stop()
    raise ProxyStartError(f"{proxy.name} not serving H3 ({last}): {proxy.log_tail()}")


def start_gateway(
    workdir: Path, port: int, backend_port: int, cpus: list[int], cert: Path, key: Path
) -> Proxy:
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "quic"
[listeners.tls]
cert_path = "{cert}"
key_path = "{key}"
[listeners.http]
pool_max_idle_per_backend = {UPSTREAM_IDLE_KEEPALIVE}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "h1"
"""
    proxy = start_expressgateway_with(
        workdir, "expressgateway-h3", listener, cpus, port, "max_keepalive_requests = 0\n"
    )
    proxy.name = GATEWAY
    return _wait_h3(proxy)


def start_floor(workdir: Path, port: int, cpus: list[int], cert: Path, key: Path) -> Proxy:
    log_path = workdir / "h3-floor.log"
    argv = [sys.executable, "-m", "tools.bench.h3_floor_server", str(port), str(cert), str(key)]
    proc = _spawn(argv, cpus, log_path)
    version = "aioquic " + _version(
        [sys.executable, "-c", "import aioquic; print(aioquic.__version__)"]
    )
    return _wait_h3(Proxy(FLOOR, version + " (asyncio serve)", proc, port, log_path))


def run_load(port: int, args: argparse.Namespace) -> tuple[int, float]:
    """(requests, seconds) of one h3_load run; raises H3LoadError on any failure."""
    argv = [
        "taskset",
        "-c",
        args.harness_cpus,
        sys.executable,
        "-m",
        "tools.bench.h3_load",
        str(port),
        f"--connections={args.connections}",
        f"--streams={args.streams}",
        f"--duration-s={args.duration_s:g}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration_s + 60)
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise H3LoadError(f"h3_load failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    if out.returncode != 0 or result["failed"] or not result["requests"]:
        raise H3LoadError(f"h3_load saw failures: {result}\n{out.stderr[-2000:]}")
    return int(result["requests"]), float(result["wall_s"])


def _measure(servers: dict[str, Proxy], args: argparse.Namespace) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {name: [] for name in servers}
    for server in servers.values():
        run_load(server.port, args)  # warm-up: backend pool filled, code paths hot
    for r in range(args.rounds):
        print(f"… round {r + 1}/{args.rounds}", flush=True)
        for name, server in servers.items():
            cpu_before = server.cpu_s()
            requests, wall_s = run_load(server.port, args)
            samples[name].append(Sample(requests, wall_s, server.cpu_s() - cpu_before))
    return samples


def _spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}..{max(values):{fmt}}]"


def render(
    servers: dict[str, Proxy], samples: dict[str, list[Sample]], args: argparse.Namespace
) -> str:
    lines = [
        f"HTTP/3 front: h3_load (aioquic client) {args.connections} connections x "
        f"{args.streams} streams, {args.duration_s:g} s per round, {args.rounds} interleaved "
        f"round(s): median [min..max]; server on CPU {args.proxy_cpus}, h3_load+backend on CPU "
        f"{args.harness_cpus}; 1 worker each; backend: nginx `return 200` over HTTP/1.1",
        "",
        f"{'server':<22} {'requests/s':>22} {'CPU-µs/req':>22} {'CPU%':>14}  version",
    ]
    for name, server in servers.items():
        ss = samples[name]
        rps = _spread([s.requests / s.wall_s for s in ss], ".0f")
        cpu = _spread([1e6 * s.cpu_s / s.requests for s in ss], ".1f")
        pct = _spread([100 * s.cpu_s / s.wall_s for s in ss], ".0f")
        lines.append(f"{name:<22} {rps:>22} {cpu:>22} {pct:>14}  {server.version}")
    if GATEWAY in samples and FLOOR in samples:
        pairs = list(zip(samples[GATEWAY], samples[FLOOR], strict=True))
        cpu_ratio = [(g.cpu_s / g.requests) / (f.cpu_s / f.requests) for g, f in pairs]
        rps_ratio = [(g.requests / g.wall_s) / (f.requests / f.wall_s) for g, f in pairs]
        verdict = "within" if statistics.median(cpu_ratio) <= TARGET_RATIO else "above"
        lines += [
            "",
            f"gateway/floor CPU-µs per request: {_spread(cpu_ratio, '.2f')}x "
            f"({verdict} the {TARGET_RATIO:g}x target of issue 14)",
            f"gateway/floor requests/s:         {_spread(rps_ratio, '.2f')}x",
        ]
    lines += [
        "",
        "CPU-µs/req: user+system CPU of the server's process tree per completed request (lower",
        "is cheaper); the gateway's includes relaying to the backend over HTTP/1.1, the floor",
        "answers itself. When the server's CPU% is well under 100, requests/s was bounded by",
        "the Python load generator or by other tenants of the CPU; CPU-µs/req is then the",
        "figure to compare. Ratios: median of per-round ratios (rounds interleave the two).",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if "quic" not in features.BUILT_LISTENER_PROTOCOLS:
        raise SystemExit("this build has no quic listeners")
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in (GATEWAY, FLOOR)]
    if unknown:
        raise SystemExit(f"unknown servers {unknown}; choose from {[GATEWAY, FLOOR]}")
    harness = cpu_list(args.harness_cpus)
    proxy_cpus = cpu_list(args.proxy_cpus)
    with tempfile.TemporaryDirectory(prefix="eg-bench-h3-") as tmp:
        workdir = Path(tmp)
        certs = make_certs(workdir / "certs")
        backend = start_backend(workdir, free_port(), harness)
        servers: dict[str, Proxy] = {}
        try:
            for name in names:
                print(f"… starting {name}", flush=True)
                if name == GATEWAY:
                    servers[name] = start_gateway(
                        workdir,
                        free_port(socket.SOCK_DGRAM),
                        backend.port,
                        proxy_cpus,
                        certs.cert,
                        certs.key,
                    )
                else:
                    servers[name] = start_floor(
                        workdir, free_port(socket.SOCK_DGRAM), proxy_cpus, certs.cert, certs.key
                    )
            samples = _measure(servers, args)
        finally:
            for server in servers.values():
                server.stop()
            backend.stop()
    print(render(servers, samples, args))
    return 0
