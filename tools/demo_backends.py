"""Demo backends for `make run`, the tests and the benchmarks.

    python -m tools.demo_backends --tcp-echo 127.0.0.1:9201 --http 127.0.0.1:9101 ...

`--tcp-echo` echoes bytes (half-close aware: EOF from the client ends the echo and
then the connection). `--http` answers every HTTP/1.1 request with a small body
naming the backend, honouring keep-alive (h11, trio). `--http-delay-ms` slows a
backend down (for EWMA and timeout demos).
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


async def serve_http(port: int, host: str, name: str, delay_s: float) -> None:
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
                            conn.send(h11.Response(status_code=200, headers=headers)) or b""
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
        for addr in args.http:
            host, port = _split(addr)
            nursery.start_soon(serve_http, port, host, f"{host}:{port}", args.http_delay_ms / 1000)
        print(
            f"demo backends up (pid {os.getpid()}): tcp-echo {args.tcp_echo} http {args.http}",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-backends")
    parser.add_argument("--tcp-echo", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--http", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--http-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
