"""`gatewayctl`: talk to a running supervisor over its control socket.

    gatewayctl [--socket PATH] [--json] status | workers | reload | backends
    gatewayctl drain WORKER [--timeout S] [--no-replace]
    gatewayctl stop [--now]
    gatewayctl kernel stats | deny list | deny add CIDR | deny del CIDR

`--json` may also follow the subcommand (`gatewayctl workers --json`).
Exit codes: 0 ok, 1 the supervisor refused or failed the command (its errors are
printed), 2 usage error, 69 no supervisor answered at the socket (none there, no answer
in time, or the connection closed without one), 77 not allowed to use the socket.
Never a traceback: every failure to talk to the supervisor is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

import msgspec

from gateway.config.schema import RuntimeConfig
from gateway.control import Request, Response, decode_response, encode_request

EXIT_UNREACHABLE = 69
EXIT_NOPERM = 77  # sysexits EX_NOPERM


class NoAnswer(Exception):
    """The supervisor closed the connection without a (decodable) answer."""


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
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise NoAnswer("the connection closed without an answer")
    try:
        return decode_response(line)
    except (msgspec.DecodeError, ValueError) as exc:
        raise NoAnswer(f"the answer is not a control response: {exc}") from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {
        c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns
    }
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


def _zygote_text(z: dict[str, Any]) -> str:
    """One line: what the worker template is doing (the process next to the workers)."""
    text = f"{z['state']}"
    if z.get("pid"):
        text += f" pid {z['pid']} up {z['uptime_s']}s cpu {z['cpu_s']}s"
    text += f" (worker template: {z['forks']} forked, {z['fallbacks']} fresh-spawn fallbacks"
    text += f", {z['restarts']} restarts)"
    if z.get("last_problem"):
        text += f"; last problem: {z['last_problem']}"
    return text


def _human(cmd: str, data: Any) -> str:
    if cmd == "status":
        lines = [f"{k}: {v}" for k, v in data.items() if k not in ("last_reload", "zygote")]
        if data.get("zygote"):
            lines.append("zygote: " + _zygote_text(data["zygote"]))
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
    # `--json` after the subcommand too; SUPPRESS keeps a top-level `--json` when absent.
    json_after = argparse.ArgumentParser(add_help=False)
    json_after.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, text in (
        ("status", "generation, config, uptime, workers ready/total"),
        ("workers", "one row per worker process"),
        ("reload", "validate the config, start a new generation, drain the old"),
        ("backends", "per listener and backend: health, weight, load, failures"),
    ):
        sub.add_parser(name, help=text, parents=[json_after])
    drain = sub.add_parser("drain", help="replace one worker and drain it", parents=[json_after])
    drain.add_argument("worker", type=int, help="worker id (the ID column of `gatewayctl workers`)")
    drain.add_argument("--timeout", type=float, default=None, help="drain budget in seconds")
    drain.add_argument("--no-replace", action="store_true", help="leave the CPU without a worker")
    stop = sub.add_parser(
        "stop", help="stop the gateway (graceful drain unless --now)", parents=[json_after]
    )
    stop.add_argument("--now", action="store_true")
    kernel = sub.add_parser(
        "kernel",
        help="kernel datapath: stats | deny add CIDR | deny del CIDR",
        parents=[json_after],
    )
    kernel.add_argument("args", nargs="+")
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
    except PermissionError as exc:
        print(
            f"gatewayctl: not allowed to use {args.socket}: {exc.strerror} (the control socket "
            "is 0600, owned by the supervisor's user: run as that user or root)",
            file=sys.stderr,
        )
        return EXIT_NOPERM
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
        print(f"gatewayctl: no supervisor at {args.socket}: {exc.strerror}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TimeoutError:
        print(
            f"gatewayctl: the supervisor at {args.socket} did not answer in time", file=sys.stderr
        )
        return EXIT_UNREACHABLE
    except NoAnswer as exc:
        print(f"gatewayctl: the supervisor at {args.socket}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OSError as exc:  # reset, broken pipe, not a socket, ...
        print(f"gatewayctl: talking to {args.socket} failed: {exc}", file=sys.stderr)
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
