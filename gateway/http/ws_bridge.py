"""WebSocket over HTTP/2 (RFC 8441): the rules of bridging an extended CONNECT to a backend.

Owns: which extended CONNECT this gateway tunnels (``:protocol = websocket`` only), the
neutral head such a stream stands for (a GET of the same target, so admission and the
forwarding rules apply as to any request), the HTTP/1.1 ``Upgrade`` handshake a bridged
stream sends (a fresh ``Sec-WebSocket-Key``; RFC 8441 §5 carries none) and the check of the
backend's 101 (``Sec-WebSocket-Accept``, RFC 6455 §4.1), the extended CONNECT header list
toward an HTTP/2 backend, and the response fields the client's 200 carries. Must never
touch I/O or draw randomness of its own (``rng`` is given).
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Final

from gateway.http.errors import BadGateway
from gateway.http.hop_by_hop import HOP_BY_HOP
from gateway.http.model import HeaderList, RequestHead, comma_tokens, first_header

WEBSOCKET: Final = b"websocket"
WS_VERSION: Final = b"13"
# RFC 6455 §1.3: the GUID the accept value is derived with.
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Fields of the client's request that belong to one hop's handshake, never forwarded as sent.
_HANDSHAKE_FIELDS: Final = frozenset((b"sec-websocket-key", b"sec-websocket-accept"))
_REQUEST_DROP: Final = HOP_BY_HOP | frozenset((b"content-length", b"host")) | _HANDSHAKE_FIELDS
_RESPONSE_DROP: Final = HOP_BY_HOP | frozenset((b"content-length",)) | _HANDSHAKE_FIELDS


def split_protocol(fields: HeaderList) -> tuple[bytes | None, HeaderList]:
    """``:protocol`` (RFC 8441 §4) and the header list without it (the neutral model has no
    slot for it: it says what the stream is, not what to forward)."""
    protocol: bytes | None = None
    rest: HeaderList = []
    for name, value in fields:
        if name == b":protocol":
            protocol = value
        else:
            rest.append((name, value))
    return protocol, rest


def is_websocket_protocol(protocol: bytes) -> bool:
    return protocol.lower() == WEBSOCKET


def websocket_head(connect: RequestHead) -> RequestHead:
    """The neutral head an extended CONNECT for a WebSocket stands for: a GET of the same
    target (RFC 8441 §5 maps it to the HTTP/1.1 ``GET`` with ``Upgrade``)."""
    return RequestHead(
        method=b"GET",
        scheme=connect.scheme,
        authority=connect.authority,
        path=connect.path or b"/",
        headers=list(connect.headers),
        http_version=connect.http_version,
    )


def new_key(rng: random.Random) -> bytes:
    """A Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1)."""
    return base64.b64encode(rng.getrandbits(128).to_bytes(16, "big"))


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer ``key`` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())


def upgrade_fields(forwarded: HeaderList, key: bytes) -> HeaderList:
    """The header fields of the HTTP/1.1 upgrade request (Host and the request line are the
    codec's): the forwarded fields without any handshake field, then the upgrade itself."""
    out = [
        (n, v) for n, v in forwarded if n not in _HANDSHAKE_FIELDS and n != b"sec-websocket-version"
    ]
    out += [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-version", WS_VERSION),
        (b"sec-websocket-key", key),
    ]
    return out


def check_upgrade_response(status: int, headers: HeaderList, key: bytes) -> None:
    """The backend's answer completes the handshake (RFC 6455 §4.1, the client's checks)."""
    if status != 101:
        raise BadGateway(f"backend answered the upgrade with {status}", kind="ws_refused")
    if WEBSOCKET not in comma_tokens(headers, b"upgrade"):
        raise BadGateway("backend's 101 lacks Upgrade: websocket", kind="ws_bad_accept")
    if b"upgrade" not in comma_tokens(headers, b"connection"):
        raise BadGateway("backend's 101 lacks Connection: upgrade", kind="ws_bad_accept")
    accept = first_header(headers, b"sec-websocket-accept")
    if accept is None or accept.strip() != accept_for(key):
        raise BadGateway("backend's Sec-WebSocket-Accept is wrong", kind="ws_bad_accept")


def extended_connect_fields(forwarded: RequestHead, scheme: bytes) -> HeaderList:
    """The header list of an extended CONNECT toward an HTTP/2 backend (RFC 8441 §4)."""
    out: HeaderList = [
        (b":method", b"CONNECT"),
        (b":protocol", WEBSOCKET),
        (b":scheme", scheme),
        (b":authority", forwarded.authority),
        (b":path", forwarded.path or b"/"),
    ]
    out += [(n, v) for n, v in forwarded.headers if n not in _REQUEST_DROP]
    if first_header(out, b"sec-websocket-version") is None:
        out.append((b"sec-websocket-version", WS_VERSION))
    return out


def tunnel_response_fields(headers: HeaderList) -> HeaderList:
    """The backend's handshake answer as the fields of the client's 200: the negotiated
    subprotocol and extensions and any other end-to-end field, no hop's handshake fields."""
    listed = frozenset(comma_tokens(headers, b"connection"))
    return [(n, v) for n, v in headers if n not in _RESPONSE_DROP and n not in listed]
