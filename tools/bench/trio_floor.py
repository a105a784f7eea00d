"""The floor of a trio + httptools HTTP/1.1 proxy: no features at all, the reference row of
`python -m tools.bench http1` ("what trio and httptools cost before we add anything").

One keep-alive backend connection per client connection, requests parsed by httptools and
forwarded as received, responses framed by Content-Length (the bench backend always sends
one). No limits, no header rules, no timeouts, no errors answered: never a product.
Run: `python -m tools.bench.trio_floor PORT BACKEND_PORT`. Must never run under pytest.
"""

from __future__ import annotations

import functools
import sys

import httptools
import trio


class _Framer:
    """httptools callbacks: note where one message ends."""

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


async def _relay_one(src: trio.SocketStream, dst: trio.SocketStream, parser, framer) -> bool:  # type: ignore[no-untyped-def]
    """Copy bytes from src to dst until one whole message went through; False on EOF."""
    framer.done = False
    while not framer.done:
        data = await src.receive_some(65536)
        if not data:
            return False
        parser.feed_data(data)
        await dst.send_all(data)
    return True


async def _serve(client: trio.SocketStream, backend_port: int) -> None:
    async with client, await trio.open_tcp_stream("127.0.0.1", backend_port) as backend:
        req, resp = _Framer(), _Framer()
        req_parser = httptools.HttpRequestParser(req)
        resp_parser = httptools.HttpResponseParser(resp)
        while await _relay_one(client, backend, req_parser, req):
            if not await _relay_one(backend, client, resp_parser, resp):
                return


def main() -> None:
    port, backend_port = int(sys.argv[1]), int(sys.argv[2])

    async def serve(client: trio.SocketStream) -> None:
        try:
            await _serve(client, backend_port)
        except (OSError, trio.BrokenResourceError, httptools.HttpParserError):
            pass

    trio.run(functools.partial(trio.serve_tcp, serve, port, host="127.0.0.1", backlog=4096))


if __name__ == "__main__":
    main()
