"""HTTP/1.1 serialisation of neutral heads, chunks and trailers, and connection persistence.

Owns the bytes the H1 adapters write and the keep-alive decision (RFC 9112 §9.3). Must never
parse input (httptools does that in the adapter) or decide header policy.
"""

from __future__ import annotations

from gateway.http.framing import BodyFraming, BodyKind
from gateway.http.model import HeaderList, RequestHead, ResponseHead, comma_tokens

LAST_CHUNK = b"0\r\n\r\n"


def _framing_lines(framing: BodyFraming) -> list[bytes]:
    if framing.kind is BodyKind.CHUNKED:
        return [b"transfer-encoding: chunked"]
    if framing.kind is BodyKind.LENGTH:
        return [b"content-length: %d" % framing.length]
    return []


def _field_lines(headers: HeaderList) -> list[bytes]:
    return [n + b": " + v for n, v in headers]


def serialize_request_head(
    head: RequestHead, framing: BodyFraming, *, extra: HeaderList | None = None
) -> bytes:
    """Request line and fields for an HTTP/1.1 next hop; framing fields come from ``framing``."""
    lines = [b"%s %s HTTP/1.1" % (head.method, head.path)]
    lines += _field_lines(head.headers)
    if extra:
        lines += _field_lines(extra)
    lines += _framing_lines(framing)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def serialize_response_head(
    head: ResponseHead,
    framing: BodyFraming | None,
    *,
    close: bool,
    declared_length: int | None = None,
) -> bytes:
    """Status line and fields toward an H1 client.

    ``framing`` None means a body-less response whose Content-Length (HEAD, 304) is still
    advertised as ``declared_length`` when known.
    """
    lines = [b"HTTP/1.1 %d %s" % (head.status, head.reason or b"")]
    lines += _field_lines(head.headers)
    if framing is not None:
        lines += _framing_lines(framing)
    elif declared_length is not None:
        lines.append(b"content-length: %d" % declared_length)
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: HeaderList) -> bytes:
    if not trailers:
        return LAST_CHUNK
    return b"0\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"


def client_keeps_alive(http_version: bytes, headers: HeaderList) -> bool:
    """HTTP/1.1 persists unless ``close``; we close every HTTP/1.0 connection after one reply."""
    if http_version != b"1.1":
        return False
    return b"close" not in comma_tokens(headers, b"connection")
