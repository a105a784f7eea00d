"""`python -m tools.bench tcp`: L4 TCP relay throughput and CPU cost, ExpressGateway vs
HAProxy vs nginx, same backend, same run.

For each proxy (and once with no proxy, the harness's own ceiling): start it with one
worker pinned to --proxy-cpus, push --size-gib over --connections connections through
it into a discarding sink, and measure wall time (first connect to the last byte's EOF
at the sink) and the CPU seconds of the proxy's process tree over the run. Prints GiB/s,
CPU seconds per GiB and the ratios of ExpressGateway to nginx and HAProxy.
Owns: the run order, the measurement window and the table. Must never: run under
pytest, or leave a proxy running (every proxy is stopped in a finally).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.bench.proxies import PROXIES, Proxy, add_run_arguments, cpu_list
from tools.bench.tcp_load import DiscardSink, LoadError, make_payload, push
from tools.ports import free_port

GIB = 1 << 30
DIRECT = "direct (no proxy)"


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # proxy process tree; 0 for DIRECT
    harness_cpu_s: float


@dataclass
class Row:
    name: str
    version: str
    gib_per_s: float
    cpu_s_per_gib: float
    cpu_percent: float
    harness_cpu_s_per_gib: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size-gib", type=float, default=1.0, help="GiB pushed per proxy per round (default 1)"
    )
    add_run_arguments(parser, list(PROXIES), connections=4, harness="the client and sink")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per round")


def _harness_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _round(
    sink: DiscardSink, port: int, proxy: Proxy | None, args: argparse.Namespace, payload_fd: int
) -> Sample:
    total_bytes = int(args.size_gib * GIB)
    sink.reset()
    cpu_before = proxy.cpu_s() if proxy else 0.0
    harness_before = _harness_cpu_s()
    started = time.perf_counter()
    errors = push(port, total_bytes, args.connections, payload_fd, args.timeout_s)
    if errors:
        logs = proxy.log_tail() if proxy else ""
        raise LoadError(f"{len(errors)} connection(s) failed: {errors[0]!r}\n{logs}")
    delivery = sink.wait(args.connections, args.timeout_s)
    cpu_after = proxy.cpu_s() if proxy else 0.0
    if delivery.bytes != total_bytes:
        raise LoadError(f"sink got {delivery.bytes} bytes, expected {total_bytes}")
    return Sample(
        wall_s=delivery.done_at - started,
        cpu_s=cpu_after - cpu_before,
        harness_cpu_s=_harness_cpu_s() - harness_before,
    )


def _row(name: str, version: str, samples: list[Sample], size_gib: float) -> Row:
    wall = statistics.median(s.wall_s for s in samples)
    cpu = statistics.median(s.cpu_s for s in samples)
    harness = statistics.median(s.harness_cpu_s for s in samples)
    return Row(name, version, size_gib / wall, cpu / size_gib, 100 * cpu / wall, harness / size_gib)


def _measure(
    name: str, sink: DiscardSink, workdir: Path, args: argparse.Namespace, payload_fd: int
) -> Row:
    if name == DIRECT:
        samples = [_round(sink, sink.port, None, args, payload_fd) for _ in range(args.rounds)]
        return _row(name, "-", samples, args.size_gib)
    proxy = PROXIES[name](workdir, free_port(), sink.port, cpu_list(args.proxy_cpus))
    try:
        samples = [_round(sink, proxy.port, proxy, args, payload_fd) for _ in range(args.rounds)]
    finally:
        proxy.stop()
    return _row(name, proxy.version, samples, args.size_gib)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"TCP relay: {args.size_gib:g} GiB per round over {args.connections} connection(s), "
        f"{args.rounds} round(s) (median); proxy on CPU {args.proxy_cpus}, client+sink on CPU "
        f"{args.harness_cpus}; 1 worker each",
        "",
        f"{'proxy':<18} {'GiB/s':>7} {'CPU-s/GiB':>10} {'proxy CPU%':>10} {'harness CPU-s/GiB':>18}  version",
    ]
    for r in rows:
        cpu = f"{r.cpu_s_per_gib:.3f}" if r.name != DIRECT else "-"
        pct = f"{r.cpu_percent:.0f}" if r.name != DIRECT else "-"
        lines.append(
            f"{r.name:<18} {r.gib_per_s:>7.3f} {cpu:>10} {pct:>10} {r.harness_cpu_s_per_gib:>18.3f}  {r.version}"
        )
    lines += [
        "",
        "CPU-s/GiB: user+system seconds of the proxy's process tree per GiB relayed (lower is",
        "cheaper). proxy CPU% well under 100 means the proxy was not what limited GiB/s (other",
        "load on the machine, or the client+sink): compare CPU-s/GiB, the steadier figure.",
    ]
    by_name = {r.name: r for r in rows}
    eg = by_name.get("expressgateway")
    if eg:
        lines.append("")
        for other in ("nginx", "haproxy"):
            o = by_name.get(other)
            if o:
                lines.append(
                    f"expressgateway / {other:<8} throughput {_ratio(eg.gib_per_s, o.gib_per_s):>6} "
                    f"(>1: faster)   CPU per GiB {_ratio(eg.cpu_s_per_gib, o.cpu_s_per_gib):>6} "
                    "(<1: cheaper)"
                )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise SystemExit(f"unknown proxies {unknown}; choose from {list(PROXIES)}")
    harness_cpus = cpu_list(args.harness_cpus)
    if harness_cpus:
        os.sched_setaffinity(0, harness_cpus)  # before any thread: they inherit it
    payload_fd = make_payload()
    sink = DiscardSink()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="eg-bench-tcp-") as tmp:
            for name in [DIRECT, *names]:
                print(f"… {name}", flush=True)
                rows.append(_measure(name, sink, Path(tmp), args, payload_fd))
    finally:
        sink.close()
        os.close(payload_fd)
    print(render(rows, args))
    return 0
