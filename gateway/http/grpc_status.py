"""gRPC as the gateway sees it: which requests are gRPC, and the status of each outcome.

Owns the detection of a gRPC request (``content-type: application/grpc`` or
``application/grpc+FORMAT``, case-insensitive, parameters ignored; ``application/grpc-web``
is not gRPC and is proxied as plain HTTP), the gRPC status codes the gateway answers with
(https://github.com/grpc/grpc/blob/master/doc/statuscodes.md), the mapping of the
gateway's own HTTP errors onto them, the trailers-only answer (HTTP 200 carrying
``grpc-status`` and ``grpc-message``, PROTOCOL-HTTP2.md "Trailers-Only"), and the bounded
label the metrics count a finished RPC under. Must never perform I/O or parse protobuf.
"""

from __future__ import annotations

from typing import Final

from gateway.http.errors import (
    BadGateway,
    BodyTooLarge,
    GatewayTimeout,
    HeadersTooLarge,
    HttpError,
    NoBackend,
    NotImplementedMethod,
    RequestTimeout,
)
from gateway.http.model import HeaderList, ResponseHead

OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
DEADLINE_EXCEEDED: Final = 4
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
UNAUTHENTICATED: Final = 16
_MAX_CODE: Final = 16

# The error kind of a gRPC exchange whose deadline (grpc-timeout, clamped) lapsed.
DEADLINE_KIND: Final = "grpc_deadline"

_GRPC: Final = b"application/grpc"
_CONTENT_TYPE: Final = (b"content-type", b"application/grpc")
# A label for a grpc-status a backend sent that is not a gRPC code (bounded cardinality).
INVALID_LABEL: Final = "invalid"
_LABELS: Final = tuple(str(code) for code in range(_MAX_CODE + 1))


def is_grpc(headers: HeaderList) -> bool:
    """True for ``application/grpc`` and ``application/grpc+proto`` (any case, any
    parameters); False for gRPC-Web and everything else."""
    for name, value in headers:
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip(b" \t").lower()
            return media == _GRPC or media.startswith(_GRPC + b"+")
    return False


def status_for_error(exc: HttpError) -> int:
    """The gRPC status of an exchange the gateway ended with ``exc``."""
    if exc.kind in (DEADLINE_KIND, "total_timeout") or isinstance(exc, RequestTimeout):
        return DEADLINE_EXCEEDED
    if isinstance(exc, (BodyTooLarge, HeadersTooLarge)):
        return RESOURCE_EXHAUSTED
    if isinstance(exc, NotImplementedMethod):
        return UNIMPLEMENTED
    # No backend, connect failures, a backend that reset or refused the stream, a response
    # head or body that timed out upstream: the service is unavailable (HTTP 502/503/504 map
    # to UNAVAILABLE in the gRPC HTTP mapping).
    if isinstance(exc, (NoBackend, BadGateway, GatewayTimeout)) or exc.status in (502, 503, 504):
        return UNAVAILABLE
    if exc.status == 421:
        return UNAVAILABLE  # another connection would serve it: a retryable status
    return INTERNAL


def _message(exc: HttpError) -> bytes:
    """grpc-message: percent-encoded (PROTOCOL-HTTP2.md); our details are ASCII, so only
    '%' and bytes outside 0x20..0x7E need encoding."""
    text = (exc.detail or exc.kind).encode("utf-8", "replace")
    out = bytearray()
    for byte in text:
        if byte < 0x20 or byte > 0x7E or byte == 0x25:
            out += b"%%%02X" % byte
        else:
            out.append(byte)
    return bytes(out)


def status_fields(code: int, exc: HttpError) -> HeaderList:
    return [(b"grpc-status", b"%d" % code), (b"grpc-message", _message(exc))]


def trailers_only(code: int, exc: HttpError) -> ResponseHead:
    """The whole answer to a gRPC request the gateway ends itself: HTTP 200 whose one
    HEADERS frame (END_STREAM) carries the status."""
    return ResponseHead(200, headers=[_CONTENT_TYPE, *status_fields(code, exc)])


def unserved_label(headers: HeaderList, http_status: int) -> str:
    """The label of a request a front ended before the core served it: "" when it is not a
    gRPC call; CANCELLED when the client reset it (no status); else from the HTTP status."""
    if not is_grpc(headers):
        return ""
    return _LABELS[CANCELLED] if http_status == 0 else str(status_from_http(http_status))


def status_label(raw: bytes | None, http_status: int) -> str:
    """The metrics label of a finished RPC: its grpc-status ("0".."16"), or, when the
    backend sent none, the status a gRPC client derives from the HTTP status."""
    if raw is None:
        return str(status_from_http(http_status))
    text = raw.strip(b" \t")
    if text.isdigit() and len(text) <= 2 and int(text) <= _MAX_CODE:
        return _LABELS[int(text)]
    return INVALID_LABEL


def status_from_http(status: int) -> int:
    """The gRPC HTTP-to-status mapping (doc/http-grpc-status-mapping.md) for a response that
    carries no grpc-status; a 200 without one is UNKNOWN."""
    if status == 400:
        return INTERNAL
    if status == 401:
        return UNAUTHENTICATED
    if status == 403:
        return PERMISSION_DENIED
    if status == 404:
        return UNIMPLEMENTED
    if status in (429, 502, 503, 504):
        return UNAVAILABLE
    return UNKNOWN


def grpc_status_of(head: HeaderList, trailers: HeaderList) -> bytes | None:
    """The grpc-status a response carried: in its trailers, or in its head (trailers-only)."""
    for fields in (trailers, head):
        for name, value in fields:
            if name == b"grpc-status":
                return value
    return None
