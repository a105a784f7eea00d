"""`python -m tools.bench reload`: requests/s while a proxy reloads its config, against the
same proxy's steady state, ExpressGateway vs nginx vs HAProxy, same run.

Each proxy serves HTTP/1.1 with one worker (HAProxy: one thread, master-worker mode) pinned to
--proxy-cpus, keep-alive to the nginx `return 200` backend (tools/bench/http1.py); wrk (one
thread, --connections keep-alive connections) and the backend share --harness-cpus. A round
measures every proxy in turn: --steady-s of load without reloads, then --reloads reloads at
an even cadence over --window-s of load. The reload is what an operator runs: `gatewayctl
reload` (which returns when the new generation serves; the next reload starts on the
cadence, or at once if one overran), SIGHUP to nginx's master, SIGUSR2 to HAProxy's master.
Prints served requests/s during the reloads as a share of steady (median of rounds), the
requests served and the errors wrk saw (socket errors, non-2xx), and for ExpressGateway how
long a reload took. Before the load, each round also measures the CPU one reload costs the
proxy's processes when idle (3 reloads; user+system time of the process tree, exited children
included through their parent's accounting): the cost a reload puts on the serving CPU,
without the noise of a shared machine's throughput. `--baseline-tree DIR` also runs ExpressGateway from another source tree
(e.g. a checkout of main) as `expressgateway@baseline`, right after `expressgateway` in every
round: an A/B of a change, interleaved, in one session.
Owns: the reload cadence and the table. Must never run under pytest, or leave a process
running (every proxy is stopped in a finally).
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tools.bench.http1 import (
    BASELINE,
    UPSTREAM_IDLE_KEEPALIVE,
    WRK_TIMEOUT_S,
    start_backend,
    start_expressgateway_h1,
    start_nginx_http,
)
from tools.bench.proxies import (
    BIN,
    Proxy,
    _spawn,
    _version,
    _wait_listening,
    add_run_arguments,
    cpu_list,
)
from tools.ports import free_port

PROXY_NAMES = ("expressgateway", "nginx", "haproxy")


@dataclass
class Run:
    requests: int
    wall_s: float
    errors: int  # wrk's socket errors (connect, read, write, timeout) + non-2xx answers
    error_text: str


@dataclass
class Round:
    steady: Run
    reloading: Run
    reloads: int
    reload_s: list[float] = field(default_factory=list)  # ExpressGateway: each reload's time
    idle_reload_cpu_s: float = 0.0  # CPU of the proxy's process tree per reload, no load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steady-s", type=float, default=6.0, help="steady load (default 6)")
    parser.add_argument(
        "--window-s", type=float, default=12.0, help="load during the reloads (default 12)"
    )
    parser.add_argument("--reloads", type=int, default=10, help="reloads per window (default 10)")
    add_run_arguments(parser, PROXY_NAMES, connections=32, harness="wrk and the backend")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="also run ExpressGateway from this source tree (e.g. a checkout of main) as "
        f"{BASELINE!r}, right after expressgateway in every round: an A/B in one session",
    )


def start_haproxy_master(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    """HAProxy in master-worker mode (-W): SIGUSR2 to the master reloads, as systemd does."""
    config = workdir / "haproxy-reload.cfg"
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
    server backend 127.0.0.1:{backend_port} pool-max-conn {UPSTREAM_IDLE_KEEPALIVE}
"""
    )
    log_path = workdir / "haproxy-reload.log"
    proc = _spawn(["haproxy", "-W", "-db", "-f", str(config)], cpus, log_path)
    proxy = Proxy("haproxy", _version(["haproxy", "-v"]), proc, port, log_path)
    return _wait_listening(proxy, processes=2)


def _start(
    name: str, workdir: Path, backend_port: int, cpus: list[int], baseline_tree: Path | None
) -> Proxy:
    port = free_port()
    if name == "expressgateway":
        return start_expressgateway_h1(workdir, port, backend_port, cpus)
    if name == BASELINE:
        return start_expressgateway_h1(workdir, port, backend_port, cpus, baseline_tree)
    if name == "nginx":
        return start_nginx_http(workdir, port, backend_port, cpus)
    if name == "haproxy":
        return start_haproxy_master(workdir, port, backend_port, cpus)
    raise SystemExit(f"unknown proxy {name!r}; choose from {PROXY_NAMES}")


def _reload(proxy: Proxy, workdir: Path, harness_cpus: str) -> None:
    """gatewayctl runs beside wrk (a client, not the proxy's CPU)."""
    if proxy.name in ("expressgateway", BASELINE):
        name = "expressgateway-h1" if proxy.name == "expressgateway" else "baseline-h1"
        socket_path = workdir / f"{name}-control.sock"
        out = subprocess.run(
            [
                "taskset",
                "-c",
                harness_cpus,
                str(BIN / "gatewayctl"),
                "--socket",
                str(socket_path),
                "reload",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"gatewayctl reload failed: {out.stdout}{out.stderr}")
    elif proxy.name == "nginx":
        proxy.proc.send_signal(signal.SIGHUP)
    else:
        proxy.proc.send_signal(signal.SIGUSR2)


def _wrk(port: int, seconds: float, args: argparse.Namespace) -> Run:
    argv = ["taskset", "-c", args.harness_cpus, "wrk", "-t1", f"-c{args.connections}"]
    argv += [f"--timeout={WRK_TIMEOUT_S:g}s"]
    argv += [f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    text = out.stdout + out.stderr
    summary = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text)
    if out.returncode != 0 or summary is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{text}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0}[summary.group(3)]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    error_text = ""
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
        error_text = socket_errors.group(0)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non_2xx:
        errors += int(non_2xx.group(1))
        error_text += f" {non_2xx.group(0)}"
    return Run(int(summary.group(1)), float(summary.group(2)) * scale, errors, error_text.strip())


IDLE_RELOADS = 3
IDLE_SETTLE_S = 1.5  # after a reload: the old workers drain (drain_timeout_ms = 1000) and exit


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU of `pid` and its live descendants, with their reaped children's."""
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _idle_reload_cpu_s(proxy: Proxy, workdir: Path, args: argparse.Namespace) -> float:
    time.sleep(IDLE_SETTLE_S)
    before = _tree_cpu_s(proxy.proc.pid)
    for _ in range(IDLE_RELOADS):
        _reload(proxy, workdir, args.harness_cpus)
        time.sleep(IDLE_SETTLE_S)
    return (_tree_cpu_s(proxy.proc.pid) - before) / IDLE_RELOADS


def _measure(proxy: Proxy, workdir: Path, args: argparse.Namespace) -> Round:
    idle_cpu_s = _idle_reload_cpu_s(proxy, workdir, args)
    steady = _wrk(proxy.port, args.steady_s, args)
    cadence_s = args.window_s / args.reloads
    reload_s: list[float] = []
    done = 0
    result: list[Run] = []
    load = threading.Thread(target=lambda: result.append(_wrk(proxy.port, args.window_s, args)))
    load.start()
    started = time.monotonic()
    time.sleep(cadence_s / 2)  # the first reload lands in a window already under load
    for i in range(args.reloads):
        due = started + cadence_s / 2 + i * cadence_s
        time.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() - started > args.window_s:
            break
        t0 = time.monotonic()
        _reload(proxy, workdir, args.harness_cpus)
        reload_s.append(time.monotonic() - t0)
        done += 1
    load.join()
    if not result:
        raise RuntimeError("the load during the reloads failed")
    ours = proxy.name in ("expressgateway", BASELINE)
    return Round(steady, result[0], done, reload_s if ours else [], idle_cpu_s)


def render(
    rounds: dict[str, list[Round]], versions: dict[str, str], args: argparse.Namespace
) -> str:
    lines = [
        f"Reload under load: wrk -t1 -c{args.connections} keep-alive; {args.reloads} reloads "
        f"in {args.window_s:g} s vs {args.steady_s:g} s steady; {args.rounds} round(s) "
        f"(median, range); proxy on CPU {args.proxy_cpus}, wrk+backend on CPU {args.harness_cpus}",
        "",
        f"{'proxy':<23} {'steady rps':>10} {'reload rps':>10} {'share':>6} {'(rounds)':>13}"
        f" {'served':>8} {'errors':>7} {'reloads':>7} {'reload s':>14} {'CPU ms':>6}  version",
    ]
    for name, rs in rounds.items():
        shares = sorted(
            r.reloading.requests / r.reloading.wall_s / (r.steady.requests / r.steady.wall_s)
            for r in rs
        )
        steady = statistics.median(r.steady.requests / r.steady.wall_s for r in rs)
        during = statistics.median(r.reloading.requests / r.reloading.wall_s for r in rs)
        served = sum(r.reloading.requests for r in rs)
        errors = sum(r.reloading.errors + r.steady.errors for r in rs)
        reloads = sum(r.reloads for r in rs)
        cpu_ms = statistics.median(r.idle_reload_cpu_s for r in rs) * 1000
        took = sorted(t for r in rs for t in r.reload_s)
        took_text = (
            f"{statistics.median(took):.2f} ({took[0]:.2f}..{took[-1]:.2f})" if took else "-"
        )
        lines.append(
            f"{name:<23} {steady:>10.0f} {during:>10.0f} {statistics.median(shares):>6.0%}"
            f" {f'{shares[0]:.0%}..{shares[-1]:.0%}':>13} {served:>8} {errors:>7} {reloads:>7}"
            f" {took_text:>14} {cpu_ms:>6.0f}  {versions[name]}"
        )
    details = [
        f"  {name} round {i + 1}: {r.reloading.error_text or r.steady.error_text}"
        for name, rs in rounds.items()
        for i, r in enumerate(rs)
        if r.reloading.errors or r.steady.errors
    ]
    lines += [
        "",
        "share: requests/s during the reloads over steady requests/s (same round); served: the",
        "requests completed during the reload windows; errors: wrk's socket errors and non-2xx",
        "answers over all windows; reload s: how long `gatewayctl reload` took (it returns when",
        "the new generation is ready), ExpressGateway only (nginx and HAProxy reload by signal);",
        f"CPU ms: CPU of the proxy's processes per reload without load ({IDLE_RELOADS} reloads "
        f"{IDLE_SETTLE_S:g} s apart, their idle CPU",
        "included; the kernel counts in 10 ms ticks), median of rounds.",
        *(["errors seen:", *details] if details else []),
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    if args.baseline_tree is not None:
        at = names.index("expressgateway") + 1 if "expressgateway" in names else 0
        names.insert(at, BASELINE)
    rounds: dict[str, list[Round]] = {name: [] for name in names}
    versions: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="eg-bench-reload-") as tmp:
        workdir = Path(tmp)
        backend = start_backend(workdir, free_port(), cpu_list(args.harness_cpus))
        try:
            for r in range(args.rounds):
                for name in names:
                    print(f"… round {r + 1}/{args.rounds}: {name}", flush=True)
                    rundir = workdir / f"{name}-{r}"  # sockets and pid files of this start
                    rundir.mkdir()
                    proxy = _start(
                        name, rundir, backend.port, cpu_list(args.proxy_cpus), args.baseline_tree
                    )
                    try:
                        versions[name] = proxy.version
                        _wrk(proxy.port, 2.0, args)  # warm-up: pools filled
                        rounds[name].append(_measure(proxy, rundir, args))
                    finally:
                        proxy.stop()
        finally:
            backend.stop()
    print(render(rounds, versions, args))
    return 0
