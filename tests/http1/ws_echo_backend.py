"""A WebSocket echo server built on the `websockets` library: the backend of the WS tests.

    python tests/http1/ws_echo_backend.py PORT

Echoes every message with its type (text or binary), no compression, no size limit, so
it is Autobahn-conformant for the non-compression cases. Must never listen anywhere but
127.0.0.1.
"""

from __future__ import annotations

import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


def echo(connection: ServerConnection) -> None:
    try:
        for message in connection:
            connection.send(message)
    except ConnectionClosed:
        pass


def main(port: int) -> None:
    with serve(echo, "127.0.0.1", port, compression=None, max_size=None) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
