"""`python -m tools.bench <benchmark>`: the command line of the benchmark harness."""

from __future__ import annotations

import argparse
import sys

from tools.bench import grpc_unary, h2, h3, http1, memory, reload, tcp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Benchmark ExpressGateway against HAProxy and nginx on loopback.",
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)
    tcp.add_arguments(sub.add_parser("tcp", help="L4 TCP relay throughput and CPU per GiB"))
    http1.add_arguments(
        sub.add_parser("http1", help="HTTP/1.1 proxy requests/s and CPU per request")
    )
    h2.add_arguments(
        sub.add_parser("h2", help="HTTP/2 front requests/s and CPU per request (h2load)")
    )
    h3.add_arguments(
        sub.add_parser("h3", help="HTTP/3 front (H3->H1) requests/s and CPU per request vs aioquic")
    )
    grpc_unary.add_arguments(
        sub.add_parser("grpc", help="unary gRPC calls/s and CPU per call, gateway vs direct")
    )
    reload.add_arguments(
        sub.add_parser("reload", help="HTTP/1.1 requests/s during config reloads vs steady")
    )
    memory.add_arguments(
        sub.add_parser("memory", help="worker RSS per idle keep-alive HTTP/1.1 connection")
    )
    args = parser.parse_args(argv)
    if args.benchmark == "tcp":
        return tcp.main(args)
    if args.benchmark == "http1":
        return http1.main(args)
    if args.benchmark == "h2":
        return h2.main(args)
    if args.benchmark == "h3":
        return h3.main(args)
    if args.benchmark == "grpc":
        return grpc_unary.main(args)
    if args.benchmark == "reload":
        return reload.main(args)
    if args.benchmark == "memory":
        return memory.main(args)
    parser.error(f"unknown benchmark {args.benchmark}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
