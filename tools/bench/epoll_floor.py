"""The floor of a plain-Python epoll + httptools HTTP/1.1 proxy: a reference row of
`python -m tools.bench http1` ("what a hand-written readiness loop under the HTTP/1.1 front
could approach"), beside trio's floor (tools/bench/trio_floor.py).

One event loop on `select.epoll` (level-triggered), one backend connection per client
connection, bytes relayed as they arrive in both directions, httptools parsing each side as
the trio floor does (its cost is part of any proxy). No limits, no header rules, no timeouts,
no errors answered: never a product. Run: `python -m tools.bench.epoll_floor PORT
BACKEND_PORT`. Must never run under pytest.
"""

from __future__ import annotations

import select
import socket
import sys

import httptools


class ParserNoop:
    """httptools wants a callback object; the floor only feeds it."""


def main() -> None:
    port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    # fd -> (its socket, the peer socket, the parser fed with what it reads)
    pairs: dict[int, tuple[socket.socket, socket.socket, object]] = {}

    def close(fd: int) -> None:
        entry = pairs.pop(fd, None)
        if entry is None:
            return
        sock, peer, _ = entry
        pairs.pop(peer.fileno(), None)
        for s in (sock, peer):
            try:
                ep.unregister(s.fileno())
            except (OSError, ValueError):
                pass
            s.close()

    lfd = listener.fileno()
    while True:
        for fd, _mask in ep.poll():
            if fd == lfd:
                while True:
                    try:
                        client, _ = listener.accept()
                    except BlockingIOError:
                        break
                    backend = socket.create_connection(("127.0.0.1", backend_port))
                    for s in (client, backend):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    pairs[client.fileno()] = (
                        client,
                        backend,
                        httptools.HttpRequestParser(ParserNoop()),
                    )
                    pairs[backend.fileno()] = (
                        backend,
                        client,
                        httptools.HttpResponseParser(ParserNoop()),
                    )
                    ep.register(client.fileno(), select.EPOLLIN)
                    ep.register(backend.fileno(), select.EPOLLIN)
                continue
            entry = pairs.get(fd)
            if entry is None:
                continue
            sock, peer, parser = entry
            try:
                data = sock.recv(65536)
                if not data:
                    close(fd)
                    continue
                parser.feed_data(data)  # type: ignore[attr-defined]
                peer.sendall(data)
            except (OSError, httptools.HttpParserError):
                close(fd)


if __name__ == "__main__":
    main()
