"""`python -m tools.bench grpc`: unary gRPC calls per second and CPU-µs per call, through
ExpressGateway (h2c front → h2 backend) and direct to the backend, same run.

The backend is a grpcio server (tools/bench/grpc_backend.py, an echo of the request) on
--harness-cpus; the gateway runs one worker pinned to --proxy-cpus. The load is h2load (one
thread, --connections connections x --streams concurrent streams) posting a pre-framed gRPC
message (5-byte prefix + payload) with ``content-type: application/grpc`` and ``te:
trailers``; h2load checks only the HTTP status, so one grpcio call through each path checks
the grpc-status and the echo before measuring. Rounds interleave gateway and direct runs.
Figures: calls/s (h2load), the gateway's CPU-µs per call (its process tree, psutil) and the
backend's CPU-µs per call (the same figure for the direct row: what the backend alone costs).
Owns: the gRPC bench's configs and its table. Must never run under pytest or leave a process
running (everything is stopped in a finally).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.bench.proxies import (
    Proxy,
    _spawn,
    _wait_listening,
    add_run_arguments,
    cpu_list,
    start_expressgateway_with,
)
from tools.ports import free_port

GATEWAY = "expressgateway h2c→h2"
DIRECT = "direct (no proxy)"
PAYLOAD_BYTES = 32


class GrpcBenchError(RuntimeError):
    """h2load failed or saw failures, or a check call did not echo with grpc-status 0."""


@dataclass
class Sample:
    calls: int
    wall_s: float
    gateway_cpu_s: float
    backend_cpu_s: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration-s", type=float, default=3.0, help="per round (default 3)")
    parser.add_argument(
        "--streams", type=int, default=10, help="concurrent streams per connection (default 10)"
    )
    add_run_arguments(parser, (GATEWAY,), connections=4, harness="h2load and the backend")


def framed_message(payload: bytes) -> bytes:
    """One gRPC message on the wire: not compressed, 4-byte big-endian length, payload."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def start_grpc_backend(workdir: Path, port: int, cpus: list[int]) -> Proxy:
    log_path = workdir / "grpc-backend.log"
    proc = _spawn([sys.executable, "-m", "tools.bench.grpc_backend", str(port)], cpus, log_path)
    import grpc  # the test extra; imported here so `python -m tools.bench --help` needs none

    proxy = Proxy("grpc-backend", f"grpcio {grpc.__version__}", proc, port, log_path)
    return _wait_listening(proxy, 1)


def start_gateway(workdir: Path, port: int, backend_port: int, cpus: list[int]) -> Proxy:
    listener = f"""[[listeners]]
name = "bench"
address = "127.0.0.1:{port}"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
protocol = "h2"
"""
    return start_expressgateway_with(
        workdir, "expressgateway-grpc", listener, cpus, port, "max_keepalive_requests = 0\n"
    )


def check_call(port: int) -> None:
    """One real gRPC call: the echo must come back with grpc-status 0."""
    import grpc

    payload = b"p" * PAYLOAD_BYTES
    from tools.bench.grpc_backend import METHOD

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply, call = ch.unary_unary(METHOD).with_call(payload, timeout=10)
    if reply != payload or call.code() is not grpc.StatusCode.OK:
        raise GrpcBenchError(f"check call on {port}: {call.code()} {reply!r}")


def run_h2load(port: int, body: Path, args: argparse.Namespace) -> tuple[int, float]:
    from tools.bench.grpc_backend import METHOD

    argv = [
        "taskset",
        "-c",
        args.harness_cpus,
        "h2load",
        "-t1",
        f"-c{args.connections}",
        f"-m{args.streams}",
        f"-D{args.duration_s:g}",
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}{METHOD}",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration_s + 60)
    text = out.stdout + out.stderr
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
        text,
    )
    took = re.search(r"finished in ([\d.]+)(ms|s)", text)
    if out.returncode != 0 or done is None or took is None:
        raise GrpcBenchError(f"h2load failed ({out.returncode}):\n{text}")
    if int(done.group(3)) or int(done.group(4)):
        raise GrpcBenchError(f"h2load saw failures:\n{text}")
    scale = {"ms": 0.001, "s": 1.0}[took.group(2)]
    return int(done.group(2)), float(took.group(1)) * scale


def _measure(
    gateway: Proxy, backend: Proxy, body: Path, args: argparse.Namespace
) -> dict[str, list[Sample]]:
    targets = {GATEWAY: gateway.port, DIRECT: backend.port}
    for port in targets.values():
        check_call(port)
        run_h2load(port, body, args)  # warm-up
    samples: dict[str, list[Sample]] = {name: [] for name in targets}
    for r in range(args.rounds):
        print(f"… round {r + 1}/{args.rounds}", flush=True)
        for name, port in targets.items():
            g0, b0 = gateway.cpu_s(), backend.cpu_s()
            calls, wall_s = run_h2load(port, body, args)
            samples[name].append(Sample(calls, wall_s, gateway.cpu_s() - g0, backend.cpu_s() - b0))
    return samples


def render(
    samples: dict[str, list[Sample]], gateway: Proxy, backend: Proxy, args: argparse.Namespace
) -> str:
    lines = [
        f"gRPC unary (h2c): h2load -t1 -c{args.connections} -m{args.streams}, "
        f"{args.duration_s:g} s per round, {args.rounds} interleaved round(s) (median); "
        f"gateway on CPU {args.proxy_cpus}, h2load+backend on CPU {args.harness_cpus}; "
        f"{PAYLOAD_BYTES}-byte messages",
        "",
        f"{'path':<24} {'calls/s':>9} {'gateway CPU-µs/call':>20} {'gateway CPU%':>12}"
        f" {'backend CPU-µs/call':>20}",
    ]
    for name, rows in samples.items():
        rate = statistics.median(s.calls / s.wall_s for s in rows)
        backend_us = statistics.median(1e6 * s.backend_cpu_s / s.calls for s in rows)
        if name == DIRECT:
            gw_us = pct = "-"
        else:
            gw_us = f"{statistics.median(1e6 * s.gateway_cpu_s / s.calls for s in rows):.1f}"
            pct = f"{statistics.median(100 * s.gateway_cpu_s / s.wall_s for s in rows):.0f}"
        lines.append(f"{name:<24} {rate:>9.0f} {gw_us:>20} {pct:>12} {backend_us:>20.1f}")
    lines += [
        "",
        f"gateway: {gateway.version}",
        f"backend: {backend.version} (Python handler; it bounds the direct row)",
        "CPU-µs/call: user+system CPU of the process tree per completed call (lower is cheaper).",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    harness = cpu_list(args.harness_cpus)
    with tempfile.TemporaryDirectory(prefix="eg-bench-grpc-") as tmp:
        workdir = Path(tmp)
        body = workdir / "request.bin"
        body.write_bytes(framed_message(b"p" * PAYLOAD_BYTES))
        backend = start_grpc_backend(workdir, free_port(), harness)
        gateway: Proxy | None = None
        try:
            print(f"… starting {GATEWAY}", flush=True)
            gateway = start_gateway(workdir, free_port(), backend.port, cpu_list(args.proxy_cpus))
            samples = _measure(gateway, backend, body, args)
            text = render(samples, gateway, backend, args)
        finally:
            if gateway is not None:
                gateway.stop()
            backend.stop()
    print(text)
    return 0
