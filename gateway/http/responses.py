"""Small locally generated responses (errors and interim), serialised for HTTP/1.x.

Owns their status lines, bodies and whether they carry ``Connection: close``. Must never
include request data in a body (no reflection).
"""

from __future__ import annotations

REASONS: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    204: b"No Content",
    304: b"Not Modified",
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    425: b"Too Early",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def reason_for(status: int) -> bytes:
    return REASONS.get(status, b"Unknown")


def error_body(status: int) -> bytes:
    return b"%d %s\n" % (status, reason_for(status))


def _build(status: int, close: bool) -> bytes:
    body = error_body(status)
    lines = [
        b"HTTP/1.1 %d %s" % (status, reason_for(status)),
        b"content-type: text/plain; charset=utf-8",
        b"content-length: %d" % len(body),
    ]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_CACHE: dict[tuple[int, bool], bytes] = {}


def error_response_h1(status: int, *, close: bool = True) -> bytes:
    """The full HTTP/1.1 bytes of a small error response."""
    key = (status, close)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _CACHE[key] = _build(status, close)
    return cached
