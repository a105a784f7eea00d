"""The floor of an HTTP/1.1 relay whose connections are coroutines resumed by their own
epoll dispatcher *inside* a trio run: a reference row of `python -m tools.bench http1`,
between the trio floor (a trio task per connection, trio schedules every wakeup) and the
epoll floor (no trio at all). One trio task owns an epoll fd and sleeps in trio's
``wait_readable`` on it; each batch of events resumes the waiting connection coroutines
directly (``coroutine.send``), so trio sees one wakeup per batch and everything else in the
process (timers, other listeners) can stay on trio.

Relays bytes as they arrive, httptools parsing each side as the other floors do. No limits,
no header rules, no timeouts, no errors answered: never a product. Run: `python -m
tools.bench.hybrid_floor PORT BACKEND_PORT`. Must never run under pytest.
"""

from __future__ import annotations

import select
import socket
import sys
from collections.abc import Coroutine, Generator
from typing import Any

import httptools
import trio

from tools.bench.epoll_floor import ParserNoop


class _Readable:
    """Awaited by a connection coroutine: park until the dispatcher sees `fd` readable."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __await__(self) -> Generator[int, None, None]:
        yield self.fd


async def _pump(sock: socket.socket, peer: socket.socket, parser: Any) -> None:
    fd = sock.fileno()
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            await _Readable(fd)
            continue
        if not data:
            return
        parser.feed_data(data)
        peer.sendall(data)


class Dispatcher:
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.waiting: dict[int, Coroutine[int, None, None]] = {}

    def start(self, coro: Coroutine[int, None, None]) -> None:
        self.resume(coro)

    def resume(self, coro: Coroutine[int, None, None]) -> None:
        try:
            fd = coro.send(None)
        except (StopIteration, OSError, httptools.HttpParserError):
            return
        self.waiting[fd] = coro

    async def run(self) -> None:
        ep, waiting = self.ep, self.waiting
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            for fd, _mask in ep.poll(0):
                coro = waiting.pop(fd, None)
                if coro is not None:
                    self.resume(coro)


async def _connection(d: Dispatcher, client: socket.socket, backend_port: int) -> None:
    backend = socket.create_connection(("127.0.0.1", backend_port))
    for s in (client, backend):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        d.ep.register(s.fileno(), select.EPOLLIN | select.EPOLLET)
    d.start(_pump(backend, client, httptools.HttpResponseParser(ParserNoop())))
    try:
        await _pump(client, backend, httptools.HttpRequestParser(ParserNoop()))
    finally:
        for s in (client, backend):
            d.waiting.pop(s.fileno(), None)
            s.close()


async def main(port: int, backend_port: int) -> None:
    d = Dispatcher()
    listener = trio.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(d.run)
        while True:
            client, _ = await listener.accept()
            d.start(_connection(d, socket.socket(fileno=client.detach()), backend_port))


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
