"""A ``trio.SocketStream`` for an accepted connection without trio's two ``setsockopt``
calls per connection.

``trio.SocketStream(sock)`` sets TCP_NODELAY and TCP_NOTSENT_LOWAT (16 KiB) on every socket
it wraps: two system calls, ~10 µs of a connection's ~100 µs with a client that closes
after every request (py-spy, issue 18). Linux copies both options from a listening socket
to the connections it accepts, so ``prepare_listener`` sets them once on the listening
socket and ``accepted_stream`` builds the same object without them (for a socket that has
TCP_NODELAY; one that has not gets trio's constructor).

The stream is built the way trio's ``__init__`` builds it (its ``socket`` and its send
conflict detector, nothing else); ``accepted_stream`` checks that shape once against a
stream trio built and uses trio's own constructor whenever it differs (another trio
version), or when the listener was not prepared.

Owns: the listener's stream options, the construction. Must never hand out a stream
whose socket lacks TCP_NODELAY (small responses would wait for Nagle).
"""

from __future__ import annotations

import contextlib
import socket as stdsocket
from typing import Any

import trio

# What trio.SocketStream.__init__ sets on every socket it wraps.
_OPTIONS = ((stdsocket.TCP_NODELAY, 1), (stdsocket.TCP_NOTSENT_LOWAT, 2**14))
_SHAPE = frozenset(("socket", "_send_conflict_detector"))


def prepare_listener(sock: stdsocket.socket) -> bool:
    """Set trio's stream options on a listening TCP socket (its connections inherit them);
    False when it cannot take them (then wrap accepted sockets with trio's constructor)."""
    try:
        for option, value in _OPTIONS:
            sock.setsockopt(stdsocket.IPPROTO_TCP, option, value)
    except OSError:
        return False
    return True


class _Shape:
    """How trio builds a stream's send conflict detector: its class and message (None: the
    stream's shape is not the one this module knows)."""

    detector_type: Any = None
    message = ""
    checked = False


def _known_shape() -> bool:
    if not _Shape.checked:
        _Shape.checked = True
        a, b = stdsocket.socketpair()
        with contextlib.closing(a), contextlib.closing(b):
            probe = trio.SocketStream(trio.socket.from_stdlib_socket(a))
            probe.socket.detach()
        if set(vars(probe)) != _SHAPE:
            return False
        made = probe._send_conflict_detector
        message = vars(made).get("_msg")
        if not isinstance(message, str):
            return False
        with contextlib.suppress(TypeError):
            if vars(type(made)(message)) == vars(made):
                _Shape.detector_type, _Shape.message = type(made), message
    return _Shape.detector_type is not None


def accepted_stream(sock: trio.socket.SocketType) -> trio.SocketStream:
    """The stream of an accepted socket: without the two ``setsockopt`` calls when it has
    TCP_NODELAY already (inherited from a prepared listener; one ``getsockopt`` to know:
    a connection the kernel queued before the listener was prepared has not)."""
    try:
        inherited = sock.getsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY) != 0
    except OSError:  # not TCP
        inherited = False
    if not inherited or not _known_shape():
        return trio.SocketStream(sock)
    stream = object.__new__(trio.SocketStream)
    stream.socket = sock
    stream._send_conflict_detector = _Shape.detector_type(_Shape.message)
    return stream
