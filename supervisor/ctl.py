"""`gatewayctl`: talk to a running supervisor over its control socket.

    gatewayctl [--socket PATH] [--json] status | workers | reload | backends
    gatewayctl drain WORKER [--timeout S] [--no-replace]
    gatewayctl stop [--now]
    gatewayctl kernel stats [--json] | deny list | deny add CIDR | deny del CIDR

Exit codes: 0 ok, 1 the supervisor refused or failed the command (its errors are
printed), 2 usage error, 69 no supervisor reachable at the socket.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from gateway.config.schema import RuntimeConfig
from gateway.control import Request, Response, decode_response, encode_request

EXIT_UNREACHABLE = 69


def call(path: str, request: Request, *, timeout_s: float = 120.0) -> Response:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.sendall(encode_request(request))
        buf = bytearray()
        while b"\n" not in buf:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    return decode_response(bytes(buf).split(b"\n", 1)[0])


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {
        c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns
    }
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def _human(cmd: str, data: Any) -> str:
    if cmd == "status":
        lines = [f"{k}: {v}" for k, v in data.items() if k != "last_reload"]
        if data.get("last_reload"):
            lines.append(f"last_reload: {json.dumps(data['last_reload'])}")
        return "\n".join(lines)
    if cmd == "workers":
        cols = [
            "id",
            "pid",
            "cpu",
            "generation",
            "state",
            "uptime_s",
            "active_connections",
            "handled_connections",
            "handled_requests",
        ]
        return _table(data, cols)
    if cmd == "backends":
        cols = [
            "listener",
            "backend",
            "weight",
            "health",
            "active_connections",
            "failures",
            "last_probe",
            "ejected_until_s",
        ]
        return _table(data, cols)
    if isinstance(data, dict):
        return "\n".join(
            f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in data.items()
        )
    return json.dumps(data, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gatewayctl", description="Control a running ExpressGateway supervisor."
    )
    parser.add_argument(
        "--socket",
        default=RuntimeConfig().control_socket,
        help="control socket path (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="generation, config, uptime, workers ready/total")
    sub.add_parser("workers", help="one row per worker process")
    sub.add_parser("reload", help="validate the config, start a new generation, drain the old")
    sub.add_parser("backends", help="per listener and backend: health, weight, load, failures")
    drain = sub.add_parser("drain", help="replace one worker and drain it")
    drain.add_argument("worker", type=int, help="worker id (the ID column of `gatewayctl workers`)")
    drain.add_argument("--timeout", type=float, default=None, help="drain budget in seconds")
    drain.add_argument("--no-replace", action="store_true", help="leave the CPU without a worker")
    stop = sub.add_parser("stop", help="stop the gateway (graceful drain unless --now)")
    stop.add_argument("--now", action="store_true")
    kernel = sub.add_parser("kernel", help="kernel datapath: stats | deny add CIDR | deny del CIDR")
    kernel.add_argument("args", nargs="+")
    kernel.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    request = Request(
        cmd=args.cmd,
        worker=getattr(args, "worker", None),
        timeout_s=getattr(args, "timeout", None),
        replace=not getattr(args, "no_replace", False),
        now=getattr(args, "now", False),
        args=getattr(args, "args", []),
    )
    try:
        response = call(args.socket, request)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        print(f"gatewayctl: no supervisor at {args.socket}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TimeoutError:
        print(
            f"gatewayctl: the supervisor at {args.socket} did not answer in time", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    if args.json:
        print(
            json.dumps(
                {"ok": response.ok, "data": response.data, "errors": response.errors}, indent=2
            )
        )
    else:
        if response.data is not None:
            print(_human(args.cmd, response.data))
        for error in response.errors:
            print(f"error: {error}", file=sys.stderr)
    return 0 if response.ok else 1


def entry() -> int:
    """Console-script entry: a closed stdout (`gatewayctl workers | head`) is not an error."""
    try:
        return main()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0


if __name__ == "__main__":
    sys.exit(entry())
