"""The floor of an HTTP/2 front in this stack: the least a trio + `h2` proxy can do per
request, as a reference row for `python -m tools.bench h2`.

`python -m tools.bench.h2_floor_proxy PORT BACKEND_PORT [CERT KEY]`: HTTP/2 (h2c prior
knowledge, or TLS with ALPN h2 when a certificate is given) in front, HTTP/1.1 keep-alive
to 127.0.0.1:BACKEND_PORT behind, one task per stream as our front has, httptools for the
backend's responses. Only what the bench sends: GET without a body; no limits, no header
rules, no timeouts, no pool cap, no error handling beyond dropping the connection. It is a
measuring stick, never a product path; it imports nothing from the gateway.
"""

from __future__ import annotations

import ssl
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools
import trio

_H2_CONFIG = h2.config.H2Configuration(client_side=False, header_encoding=None)


class _Backend:
    """Idle keep-alive connections to the backend; a new one when none is idle."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[trio.SocketStream] = []

    async def fetch(self, path: bytes, authority: bytes) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await trio.open_tcp_stream("127.0.0.1", self.port)
        await conn.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        done: list[bool] = []
        body = bytearray()

        class _On:
            def on_body(self, data: bytes) -> None:
                body.extend(data)

            def on_message_complete(self) -> None:
                done.append(True)

        parser = httptools.HttpResponseParser(_On())
        while not done:
            data = await conn.receive_some(65536)
            if not data:
                raise ConnectionError("backend closed")
            parser.feed_data(data)
        self.idle.append(conn)
        return parser.get_status_code(), bytes(body)


async def _serve(stream: trio.abc.Stream, backend: _Backend) -> None:
    conn = h2.connection.H2Connection(config=_H2_CONFIG)
    conn.initiate_connection()
    lock = trio.Lock()

    async def flush() -> None:
        async with lock:
            data = conn.data_to_send()
            if data:
                await stream.send_all(data)

    async def answer(stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo = dict(h for h in headers if h[0].startswith(b":"))
        status, body = await backend.fetch(pseudo[b":path"], pseudo.get(b":authority", b"x"))
        conn.send_headers(
            stream_id, [(b":status", str(status).encode()), (b"content-length", b"%d" % len(body))]
        )
        conn.send_data(stream_id, body, end_stream=True)
        await flush()

    async with trio.open_nursery() as nursery:
        await flush()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    nursery.start_soon(answer, event.stream_id, event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    nursery.cancel_scope.cancel()
            await flush()
        nursery.cancel_scope.cancel()


async def main(port: int, backend_port: int, cert: str | None, key: str | None) -> None:
    backend = _Backend(backend_port)
    tls: ssl.SSLContext | None = None
    if cert and key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        tls.set_alpn_protocols(["h2"])

    async def handler(raw: trio.SocketStream) -> None:
        stream: trio.abc.Stream = raw
        try:
            if tls is not None:
                stream = trio.SSLStream(raw, tls, server_side=True)
                await stream.do_handshake()
            await _serve(stream, backend)
        except* (trio.BrokenResourceError, ConnectionError, OSError, h2.exceptions.ProtocolError):
            pass  # the peer went away (h2load closes its connections at the end of a run)
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_tcp(handler, port, host="127.0.0.1", backlog=4096)


if __name__ == "__main__":
    argv = sys.argv[1:]
    trio.run(main, int(argv[0]), int(argv[1]), *(argv[2:4] if len(argv) >= 4 else (None, None)))
