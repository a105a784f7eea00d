"""`python -m tools.bench http1`: HTTP/1.1 reverse-proxy requests/s and CPU per request,
ExpressGateway vs nginx vs HAProxy, same fast backend, same run.

The backend is a second nginx that answers every request with a fixed 200 (`return 200`).
Each proxy runs one worker (HAProxy: one thread, `mode http`) pinned to --proxy-cpus, with
keep-alive to the backend; wrk (one thread, --connections keep-alive connections) and the
backend share --harness-cpus. All proxies are started up front; each round measures every
proxy once, in turn (and the backend alone, the harness's own ceiling), wrk running
--duration-s seconds each, so a shared machine's drifting load falls on all of them alike;
every other round runs the list backwards, so a drift within a round cancels out of each
pair's ratio over two rounds instead of always favouring whichever proxy runs first.
requests/s comes from wrk and the CPU seconds of the proxy's process tree over the round
from psutil. Prints requests/s, proxy CPU-µs per request and the ratios to nginx (median
of the per-round ratios). ``--close``: every request on a new connection (the client asks
for the close), the cost of a connection's start and end.
Owns: the run order, the proxies' HTTP configs, the measurement window and the table.
Must never: run under pytest, or leave a process running (everything is stopped in a
finally).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httptools
import trio

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

DIRECT = "direct (no proxy)"
# Idle keep-alive connections each proxy may keep to the backend (nginx `keepalive`, our
# `pool_max_idle_per_backend`); above --connections, so no proxy reconnects in steady state.
UPSTREAM_IDLE_KEEPALIVE = 64
DEFAULTS = "expressgateway-defaults"
TRIO_FLOOR = "trio-floor"
EPOLL_FLOOR = "epoll-floor"
HYBRID_FLOOR = "trio+epoll-floor"
# The defaults row runs right after the like-for-like one (and right before it on the
# backward passes): its target is a ratio of the two, and a machine's state drifts within
# the ~half minute the other proxies take between them (issue 18: the same code measured
# 1.07-1.17x in four runs with three proxies in between).
PROXY_NAMES = (
    "expressgateway",
    DEFAULTS,
    "nginx",
    "haproxy",
    "expressgateway-general",
    TRIO_FLOOR,
    EPOLL_FLOOR,
    HYBRID_FLOOR,
)
# --close: every request on a new connection (wrk sends "Connection: close"; every proxy
# closes after its answer and wrk reconnects): the cost of a connection's start and end.
# Only the proxies that honour the header (the reference floors keep connections open).
CLOSE_PROXY_NAMES = ("expressgateway", DEFAULTS, "nginx", "haproxy")
BASELINE = "expressgateway@baseline"
# The access log is flushed once a second (workers/access_log.py): wait that long (and a
# margin) after a round before counting the defaults row's access lines.
ACCESS_LOG_SETTLE_S = 1.5
WRK_TIMEOUT_S = 10.0


class WrkError(RuntimeError):
    """wrk failed, printed no summary, or saw errors / non-2xx answers."""


@dataclass
class Sample:
    requests: int
    wall_s: float
    cpu_s: float  # proxy process tree; 0 for DIRECT
    access_lines: int | None = None  # DEFAULTS only: access-log lines the round wrote
    p99_ms: float = 0.0  # wrk's 99th percentile latency (0: not measured, e.g. h2load)


@dataclass
class Row:
    name: str
    version: str
    requests_per_s: float
    cpu_us_per_request: float
    cpu_percent: float
    rps_vs_nginx: float | None  # median of per-round ratios
    cpu_vs_nginx: float | None
    cpu_us_range: tuple[float, float] = (0.0, 0.0)  # lowest and highest round
    cpu_vs_nginx_range: tuple[float, float] | None = None
    p99_ms: float = 0.0  # median of rounds
    p99_vs_nginx: float | None = None  # median of per-round ratios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=8.0, help="per round (default 8)")
    add_run_arguments(parser, PROXY_NAMES, connections=32, harness="wrk and the backend")
    parser.add_argument(
        "--close",
        action="store_true",
        help="a new connection for every request (wrk sends Connection: close); without "
        f"--proxies: {','.join(CLOSE_PROXY_NAMES)}",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run ExpressGateway from this source tree (e.g. an export of HEAD) as "
        f"{BASELINE!r}, interleaved with the others: an A/B of a change in one session",
    )


# ---- the backend and the proxies --------------------------------------------------------


def _nginx_prefix_lines(workdir: Path, name: str, worker_connections: int = 4096) -> str:
    temp = "\n    ".join(
        f"{kind}_temp_path {workdir / f'{name}-{kind}'};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
worker_rlimit_nofile {2 * worker_connections + 64};
pid {workdir / f"{name}.pid"};
error_log {workdir / f"{name}-error.log"} warn;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    {temp}
"""


def _start_nginx(
    workdir: Path, name: str, body: str, port: int, cpus: list[int], worker_connections: int = 4096
) -> Proxy:
    config = workdir / f"{name}.conf"
    config.write_text(_nginx_prefix_lines(workdir, name, worker_connections) + body + "}\n")
    log_path = workdir / f"{name}.log"
    argv = [
        "nginx",
        "-p",
        str(workdir),
        "-e",
        str(workdir / f"{name}-error.log"),
        "-c",
        str(config),
    ]
    proc = _spawn(argv, cpus, log_path)
    proxy = Proxy(name, _version(["nginx", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=2)


def start_backend(workdir: Path, port: int, cpus: list[int]) -> Proxy:
    """nginx answering every request with a fixed 200 "ok" itself."""
    body = f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            return 200 "ok";
        }}
    }}
"""
    return _start_nginx(workdir, "backend", body, port, cpus)


def start_nginx_http(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    body = f"""    upstream backend {{
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
    proxy = _start_nginx(workdir, "nginx", body, port, cpus)
    proxy.name = "nginx"
    return proxy


def start_haproxy_http(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    config = workdir / "haproxy-http.cfg"
    config.write_text(
        f"""global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

listen bench
    bind 127.0.0.1:{port}
    server backend 127.0.0.1:{backend_port}
"""
    )
    log_path = workdir / "haproxy-http.log"
    proc = _spawn(["haproxy", "-db", "-f", str(config)], cpus, log_path)
    proxy = Proxy("haproxy", _version(["haproxy", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=1)


def start_expressgateway_h1(
    workdir: Path,
    port: int,
    backend_port: int,
    cpus: list[int],
    tree: Path | None = None,
    *,
    fast_path: bool = True,
    defaults: bool = False,
) -> Proxy:
    """One worker, no access log (nginx and HAProxy log nothing either), unlimited keep-alive
    (nginx: 1000000), as many idle upstream connections as nginx keeps (``keepalive``);
    ``tree``: run that source tree instead of this one (see --baseline-tree); ``fast_path``
    False: the general proxy core instead of the dedicated HTTP/1.1 path; ``defaults``: the
    shipped defaults instead (access log on, into the log file; keep-alive cap 100)."""
    fast = "" if fast_path else "h1_fast_path = false\n"
    if defaults:
        listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.http]
pool_max_idle_per_backend = {UPSTREAM_IDLE_KEEPALIVE}
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
        proxy = start_expressgateway_with(workdir, DEFAULTS, listener, cpus, port, access_log=True)
        proxy.name = DEFAULTS
        return proxy
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "h1"
[listeners.http]
pool_max_idle_per_backend = {UPSTREAM_IDLE_KEEPALIVE}
{fast}[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""
    if tree is None:
        name = "expressgateway-h1" if fast_path else "expressgateway-general"
        proxy = start_expressgateway_with(
            workdir, name, listener, cpus, port, "max_keepalive_requests = 0\n"
        )
        if not fast_path:
            proxy.name = "expressgateway-general"
        return proxy
    proxy = start_expressgateway_with(
        workdir, "baseline-h1", listener, cpus, port, "max_keepalive_requests = 0\n", tree
    )
    proxy.name = BASELINE
    return proxy


def start_expressgateway_general(
    workdir: Path, port: int, backend_port: int, cpus: list[int]
) -> Proxy:
    """The same listener through the general proxy core (``h1_fast_path = false``)."""
    return start_expressgateway_h1(workdir, port, backend_port, cpus, fast_path=False)


def start_expressgateway_defaults(
    workdir: Path, port: int, backend_port: int, cpus: list[int]
) -> Proxy:
    """The shipped defaults: the access log on (JSON lines into the proxy's log file) and
    the keep-alive cap of 100 requests per client connection."""
    return start_expressgateway_h1(workdir, port, backend_port, cpus, defaults=True)


def _start_floor(
    name: str, module: str, version: str
) -> Callable[[Path, int, int, list[int]], Proxy]:
    """A starter for one reference floor (``python -m module PORT BACKEND_PORT``, one
    process): a reference row, not a peer."""

    def start(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
        log_path = workdir / f"{name}.log"
        argv = [sys.executable, "-m", module, str(port), str(backend_port)]
        proc = _spawn(argv, cpus, log_path)
        return _wait_listening(Proxy(name, version, proc, port, log_path), processes=1)

    return start


# tools/bench/trio_floor.py: trio + httptools and nothing else.
start_trio_floor = _start_floor(
    TRIO_FLOOR,
    "tools.bench.trio_floor",
    f"trio {trio.__version__} + httptools {httptools.__version__}",
)
# tools/bench/epoll_floor.py: a plain-Python epoll loop + httptools.
start_epoll_floor = _start_floor(
    EPOLL_FLOOR, "tools.bench.epoll_floor", f"select.epoll + httptools {httptools.__version__}"
)
# tools/bench/hybrid_floor.py: connection coroutines resumed by an epoll dispatcher inside a
# trio run.
start_hybrid_floor = _start_floor(
    HYBRID_FLOOR,
    "tools.bench.hybrid_floor",
    f"trio {trio.__version__} + own epoll dispatch + httptools {httptools.__version__}",
)


STARTERS = {
    "expressgateway": start_expressgateway_h1,
    "nginx": start_nginx_http,
    "haproxy": start_haproxy_http,
    "expressgateway-general": start_expressgateway_general,
    DEFAULTS: start_expressgateway_defaults,
    TRIO_FLOOR: start_trio_floor,
    EPOLL_FLOOR: start_epoll_floor,
    HYBRID_FLOOR: start_hybrid_floor,
}

# ---- measurement ------------------------------------------------------------------------


def run_wrk(port: int, args: argparse.Namespace) -> tuple[int, float, float]:
    """(requests, seconds, p99 latency in ms) of one wrk run; raises WrkError on any error
    or non-2xx."""
    argv = [
        "taskset",
        "-c",
        args.harness_cpus,
        "wrk",
        "-t1",
        f"-c{args.connections}",
        # wrk's default 2 s: a shared machine that stalls the harness for 2 s fails a round
        # that measured fine (seen: all 32 connections of an nginx round at once).
        f"--timeout={WRK_TIMEOUT_S:g}s",
        "--latency",
        *(["-H", "Connection: close"] if args.close else []),
        f"-d{args.duration_s:g}s",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration_s + 30)
    text = out.stdout + out.stderr
    summary = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    if out.returncode != 0 or summary is None:
        raise WrkError(f"wrk failed ({out.returncode}):\n{text}")
    if "Non-2xx" in text or "Socket errors" in text:
        raise WrkError(f"wrk saw failures:\n{text}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[summary.group(3)]
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if p99 is None:
        raise WrkError(f"wrk printed no 99th percentile:\n{text}")
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return int(summary.group(1)), float(summary.group(2)) * scale, p99_ms


def _round(port: int, proxy: Proxy | None, args: argparse.Namespace) -> Sample:
    cpu_before = proxy.cpu_s() if proxy else 0.0
    requests, wall_s, p99_ms = run_wrk(port, args)
    cpu_after = proxy.cpu_s() if proxy else 0.0
    sample = Sample(requests, wall_s, cpu_after - cpu_before, p99_ms=p99_ms)
    if proxy is not None and proxy.name == DEFAULTS:
        sample.access_lines = _take_access_lines(proxy)
    return sample


def _take_access_lines(proxy: Proxy) -> int:
    """The access lines the round wrote (after the flush interval), then empty the log so a
    long run does not fill the disk (the worker appends: O_APPEND writes land at the new end)."""
    time.sleep(ACCESS_LOG_SETTLE_S)
    with open(proxy.log_path, "rb") as log:
        lines = sum(1 for line in log if b'"event":"access"' in line)
    os.truncate(proxy.log_path, 0)
    return lines


def _row(name: str, version: str, samples: list[Sample], nginx: list[Sample] | None) -> Row:
    rps = statistics.median(s.requests / s.wall_s for s in samples)
    per_round = sorted(1e6 * s.cpu_s / s.requests for s in samples)
    cpu_us = statistics.median(per_round)
    pct = statistics.median(100 * s.cpu_s / s.wall_s for s in samples)
    # Ratios pair each round with nginx's round of the same pass (interleaved), so load that
    # other tenants put on the machine during one pass weighs on both sides of the ratio.
    rps_ratio = cpu_ratio = p99_ratio = None
    cpu_ratio_range = None
    p99_ms = statistics.median(s.p99_ms for s in samples)
    if nginx and name != DIRECT and all(n.p99_ms for n in nginx):
        p99_ratio = statistics.median(
            s.p99_ms / n.p99_ms for s, n in zip(samples, nginx, strict=True)
        )
    if nginx and name != DIRECT:
        rps_ratio = statistics.median(
            (s.requests / s.wall_s) / (n.requests / n.wall_s)
            for s, n in zip(samples, nginx, strict=True)
        )
        cpu_ratios = sorted(
            (s.cpu_s / s.requests) / (n.cpu_s / n.requests)
            for s, n in zip(samples, nginx, strict=True)
        )
        cpu_ratio = statistics.median(cpu_ratios)
        cpu_ratio_range = (cpu_ratios[0], cpu_ratios[-1])
    return Row(
        name,
        version,
        rps,
        cpu_us,
        pct,
        rps_ratio,
        cpu_ratio,
        (per_round[0], per_round[-1]),
        cpu_ratio_range,
        p99_ms,
        p99_ratio,
    )


def _measure_all(
    names: list[str], backend: Proxy, workdir: Path, args: argparse.Namespace
) -> list[Row]:
    """Start every proxy (idle ones cost nothing), then run the rounds interleaved: pass r
    measures each proxy once, in order (backwards on odd passes), so slow drifts of a shared
    machine hit all alike."""
    proxies: dict[str, Proxy | None] = {DIRECT: None}
    try:
        for name in names:
            print(f"… starting {name}", flush=True)
            proxies[name] = STARTERS[name](
                workdir, free_port(), backend.port, cpu_list(args.proxy_cpus)
            )
        if args.baseline_tree is not None:
            print(f"… starting {BASELINE} from {args.baseline_tree}", flush=True)
            proxies[BASELINE] = start_expressgateway_h1(
                workdir, free_port(), backend.port, cpu_list(args.proxy_cpus), args.baseline_tree
            )
        samples: dict[str, list[Sample]] = {name: [] for name in proxies}
        for name, proxy in proxies.items():
            try:
                run_wrk(proxy.port if proxy else backend.port, args)  # warm-up: pools filled
            except WrkError as exc:
                raise WrkError(f"{name} (warm-up): {exc}") from None
            if proxy is not None and proxy.name == DEFAULTS:
                _take_access_lines(proxy)  # the warm-up's lines are not a round's
        for r in range(args.rounds):
            print(f"… round {r + 1}/{args.rounds}", flush=True)
            order = list(proxies.items())
            if r % 2:
                order.reverse()
            for name, proxy in order:
                try:
                    sample = _round(proxy.port if proxy else backend.port, proxy, args)
                except WrkError as exc:
                    raise WrkError(f"{name} (round {r + 1}): {exc}") from None
                samples[name].append(sample)
    finally:
        for proxy in proxies.values():
            if proxy is not None:
                proxy.stop()
    nginx = samples.get("nginx")
    _print_defaults_check(samples)
    return [
        _row(name, proxy.version if proxy else backend.version, samples[name], nginx)
        for name, proxy in proxies.items()
    ]


def _print_defaults_check(samples: dict[str, list[Sample]]) -> None:
    """The defaults row against the like-for-like one (median of per-round CPU/request
    ratios), and proof that it logged: one access line per request wrk counted (a few more
    are normal: requests in flight when wrk stopped were served and logged, not counted)."""
    defaults, lfl = samples.get(DEFAULTS), samples.get("expressgateway")
    baseline = samples.get(BASELINE)
    if baseline and lfl:
        ratios = sorted(
            (e.cpu_s / e.requests) / (b.cpu_s / b.requests)
            for e, b in zip(lfl, baseline, strict=True)
        )
        print(
            f"expressgateway CPU/req vs {BASELINE}: median {statistics.median(ratios):.3f}x "
            f"(rounds {ratios[0]:.3f}x..{ratios[-1]:.3f}x)"
        )
    if not defaults:
        return
    lines = sum(s.access_lines or 0 for s in defaults)
    requests = sum(s.requests for s in defaults)
    verdict = "ok" if lines >= requests else "MISSING LINES"
    print(f"{DEFAULTS}: {lines} access lines for {requests} requests counted by wrk ({verdict})")
    if lfl:
        ratios = sorted(
            (d.cpu_s / d.requests) / (e.cpu_s / e.requests)
            for d, e in zip(defaults, lfl, strict=True)
        )
        print(
            f"{DEFAULTS} CPU/req vs expressgateway (like-for-like): median "
            f"{statistics.median(ratios):.2f}x (rounds {ratios[0]:.2f}x..{ratios[-1]:.2f}x)"
        )


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def render(rows: list[Row], args: argparse.Namespace) -> str:
    per = "a new connection per request, " if args.close else ""
    lines = [
        f"HTTP/1.1 proxy: wrk -t1 -c{args.connections}, {per}{args.duration_s:g} s per round, "
        f"{args.rounds} interleaved round(s) (median); proxy on CPU {args.proxy_cpus}, wrk+backend on "
        f"CPU {args.harness_cpus}; 1 worker/thread each; backend: nginx `return 200`",
        "",
        f"{'proxy':<23} {'requests/s':>11} {'CPU-µs/req':>11} {'(rounds)':>13} {'proxy CPU%':>10}"
        f" {'rps vs nginx':>12} {'CPU/req vs nginx':>16} {'(rounds)':>13}"
        f" {'p99 ms':>7} {'p99 vs nginx':>12}  version",
    ]
    for r in rows:
        direct = r.name == DIRECT
        cpu = "-" if direct else f"{r.cpu_us_per_request:.1f}"
        spread = "-" if direct else f"{r.cpu_us_range[0]:.1f}..{r.cpu_us_range[1]:.1f}"
        pct = "-" if direct else f"{r.cpu_percent:.0f}"
        vs = r.cpu_vs_nginx_range
        vs_spread = f"{vs[0]:.2f}..{vs[1]:.2f}" if vs else "-"
        lines.append(
            f"{r.name:<23} {r.requests_per_s:>11.0f} {cpu:>11} {spread:>13} {pct:>10}"
            f" {_ratio(r.rps_vs_nginx):>12} {_ratio(r.cpu_vs_nginx):>16} {vs_spread:>13}"
            f" {(f'{r.p99_ms:.2f}' if r.p99_ms else '-'):>7} {_ratio(r.p99_vs_nginx):>12}"
            f"  {r.version}"
        )
    lines += [
        "",
        "CPU-µs/req: user+system CPU of the proxy's process tree per proxied request (lower is",
        "cheaper); the steadier figure when proxy CPU% is well under 100 (the proxy was not",
        "what limited requests/s). Ratios: >1 rps is faster than nginx, <1 CPU/req is cheaper;",
        "each is the median of per-round ratios (rounds interleave the proxies).",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.close and args.proxies == ",".join(PROXY_NAMES):  # the default list
        args.proxies = ",".join(CLOSE_PROXY_NAMES)
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in STARTERS]
    if unknown:
        raise SystemExit(f"unknown proxies {unknown}; choose from {list(STARTERS)}")
    with tempfile.TemporaryDirectory(prefix="eg-bench-http1-") as tmp:
        workdir = Path(tmp)
        backend = start_backend(workdir, free_port(), cpu_list(args.harness_cpus))
        try:
            rows = _measure_all(names, backend, workdir, args)
        finally:
            backend.stop()
    print(render(rows, args))
    return 0
