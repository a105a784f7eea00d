"""The message one worker hands a QUIC datagram to another with (workers/quic_listener.py).

Owns the address of a worker's handoff socket (an abstract Unix datagram socket named by
the owner's pid and the listener, so no file is left behind and a dead owner's name simply
refuses) and the message: the client address (host, port) before the datagram. Must never
block or do anything else with sockets.
"""

from __future__ import annotations

import struct

_PORT = struct.Struct("!H")


def handoff_address(pid: int, listener: str) -> bytes:
    """The abstract Unix socket of one worker's listener (Linux abstract namespace)."""
    return b"\0expressgateway-quic/%d/%s" % (pid, listener.encode())


def encode_handoff(addr: tuple[object, ...], data: bytes) -> bytes:
    host = str(addr[0]).encode()
    return bytes((len(host),)) + host + _PORT.pack(int(addr[1])) + data  # type: ignore[call-overload]


def decode_handoff(message: bytes) -> tuple[tuple[str, int], bytes] | None:
    if not message:
        return None
    n = message[0]
    if len(message) < 1 + n + 2:
        return None
    host = message[1 : 1 + n].decode("ascii", "replace")
    (port,) = _PORT.unpack_from(message, 1 + n)
    return (host, port), message[3 + n :]
