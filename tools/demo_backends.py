"""Demo backends for `make run`, the tests and the benchmarks.

    python -m tools.demo_backends --tcp-echo 127.0.0.1:9201 --http 127.0.0.1:9101 ...

`--tcp-echo` echoes bytes (half-close aware: EOF from the client ends the echo and
then the connection). `--udp-echo` answers each datagram with
`backend=H:P peer=H:P\n` + the datagram (its own address and the sender's, so tests can
tell which backend and which gateway session answered). `--http` answers every HTTP/1.1 request with a small body
naming the backend, honouring keep-alive (h11, trio); `GET /status/NNN` answers
with status NNN. `--http-delay-ms` slows a
backend down (for EWMA and timeout demos); `--http-status` makes every other answer
that status and `--http-health-status` sets the answer to `/healthz` (for passive
and active health demos).
"""

from __future__ import annotations

import argparse
import os
import sys

import h11
import trio


async def serve_tcp_echo(port: int, host: str) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    await trio.serve_tcp(echo, port, host=host)


async def serve_udp_echo(port: int, host: str) -> None:
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    with trio.socket.socket(family, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((host, port))
        while True:
            data, peer = await sock.recvfrom(65535)
            prefix = f"backend={host}:{port} peer={peer[0]}:{peer[1]}\n".encode()
            try:
                await sock.sendto(prefix + data, peer)
            except OSError:
                continue  # the sender is gone (ICMP) or the reply is too big; keep serving


async def serve_http(
    port: int,
    host: str,
    name: str,
    delay_s: float,
    default_status: int = 200,
    health_status: int | None = None,
) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is not h11.DONE:
                            return
                        continue
                    if isinstance(event, h11.Request):
                        body = bytearray()
                        while True:
                            ev = conn.next_event()
                            if ev is h11.NEED_DATA:
                                conn.receive_data(await stream.receive_some(65536))
                            elif isinstance(ev, h11.Data):
                                body += ev.data
                            elif isinstance(ev, h11.EndOfMessage):
                                break
                        if delay_s:
                            await trio.sleep(delay_s)
                        status = default_status
                        target = event.target.decode()
                        if target == "/healthz" and health_status is not None:
                            status = health_status
                        if target.startswith("/status/") and target[8:11].isdigit():
                            status = int(target[8:11])  # /status/503 answers 503
                        payload = (
                            f"backend={name} method={event.method.decode()} path={event.target.decode()} "
                            f"body_bytes={len(body)}\n"
                        ).encode()
                        headers = [
                            ("content-type", "text/plain"),
                            ("content-length", str(len(payload))),
                            ("x-backend", name),
                        ]
                        await stream.send_all(
                            conn.send(h11.Response(status_code=status, headers=headers)) or b""
                        )
                        await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
                        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                        if conn.our_state is h11.MUST_CLOSE:
                            return
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    await trio.serve_tcp(handle, port, host=host)


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


async def _main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        for addr in args.tcp_echo:
            host, port = _split(addr)
            nursery.start_soon(serve_tcp_echo, port, host)
        for addr in args.udp_echo:
            host, port = _split(addr)
            nursery.start_soon(serve_udp_echo, port, host)
        for addr in args.http:
            host, port = _split(addr)
            nursery.start_soon(
                serve_http,
                port,
                host,
                f"{host}:{port}",
                args.http_delay_ms / 1000,
                args.http_status,
                args.http_health_status,
            )
        print(
            f"demo backends up (pid {os.getpid()}): tcp-echo {args.tcp_echo} http {args.http}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-backends")
    parser.add_argument("--tcp-echo", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--http", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--udp-echo", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--http-delay-ms", type=float, default=0.0)
    parser.add_argument("--http-status", type=int, default=200, help="status of every answer")
    parser.add_argument(
        "--http-health-status", type=int, default=None, help="status of GET /healthz answers"
    )
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
