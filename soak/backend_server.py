"""One soak backend process: HTTP/1.1 (h11), WebSocket echo (trio-websocket), TCP echo and
UDP echo on the ports it is given, all on 127.0.0.1.

    python -m soak.backend_server --name A --http 9101 --ws 9102 --tcp 9103 --udp 9104

HTTP: `GET /bytes/N` answers N bytes; any request with a body answers `received=N`;
`GET /healthz` answers 200, or 503 between SIGUSR1 and SIGUSR2 (the health-flap fault);
anything else answers `backend=NAME ...`. The runner kills and restarts this process for the
backend-restart fault. It must never listen beyond loopback.
"""

from __future__ import annotations

import argparse
import signal
import sys

import h11
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

HOST = "127.0.0.1"
CHUNK_BYTES = 64 * 1024
_FILL = b"d" * CHUNK_BYTES


class Health:
    healthy = True


async def _send_body(stream: trio.SocketStream, conn: h11.Connection, size: int) -> None:
    left = size
    while left > 0:
        n = min(left, CHUNK_BYTES)
        await stream.send_all(conn.send(h11.Data(data=_FILL[:n])) or b"")
        left -= n


async def _answer(
    stream: trio.SocketStream, conn: h11.Connection, req: h11.Request, body: int, name: str
) -> None:
    target = req.target.decode("latin-1")
    status, size, payload = 200, 0, b""
    if target == "/healthz":
        status = 200 if Health.healthy else 503
        payload = b"ok\n" if Health.healthy else b"flapping\n"
    elif target.startswith("/bytes/") and target[7:].isdigit():
        size = int(target[7:])
    elif body:
        payload = f"received={body}\n".encode()
    else:
        payload = f"backend={name} path={target}\n".encode()
    length = size or len(payload)
    headers = [("content-length", str(length)), ("x-backend", name)]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
    if size:
        await _send_body(stream, conn, size)
    elif payload:
        await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


async def serve_http(port: int, name: str) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        request: h11.Request | None = None
        body = 0
        async with stream:
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(CHUNK_BYTES))
                    elif isinstance(event, h11.Request):
                        request, body = event, 0
                    elif isinstance(event, h11.Data):
                        body += len(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        assert request is not None
                        await _answer(stream, conn, request, body, name)
                        if conn.our_state is h11.MUST_CLOSE:
                            return
                        conn.start_next_cycle()
                    elif isinstance(event, h11.ConnectionClosed):
                        return
            except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    await trio.serve_tcp(handle, port, host=HOST)


async def serve_ws(port: int) -> None:
    async def handle(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            return

    await serve_websocket(handle, HOST, port, ssl_context=None, max_message_size=1 << 24)


async def serve_tcp_echo(port: int) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(CHUNK_BYTES):
                    await stream.send_all(data)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    await trio.serve_tcp(echo, port, host=HOST)


async def serve_udp_echo(port: int) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((HOST, port))
        while True:
            data, peer = await sock.recvfrom(65535)
            try:
                await sock.sendto(data, peer)
            except OSError:
                continue  # the sender is gone; keep serving


async def serve_health_signals() -> None:
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        async for signum in signals:
            Health.healthy = signum == signal.SIGUSR2


async def _main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_health_signals)
        if args.http:
            nursery.start_soon(serve_http, args.http, args.name)
        if args.ws:
            nursery.start_soon(serve_ws, args.ws)
        if args.tcp:
            nursery.start_soon(serve_tcp_echo, args.tcp)
        if args.udp:
            nursery.start_soon(serve_udp_echo, args.udp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="soak-backend")
    parser.add_argument("--name", required=True)
    for kind in ("http", "ws", "tcp", "udp"):
        parser.add_argument(f"--{kind}", type=int, default=0, metavar="PORT")
    args = parser.parse_args(argv)
    try:
        trio.run(_main, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
