"""Message body framing decisions, including the request-smuggling rules.

Owns: how long a request or response body is (none / Content-Length / chunked / until
close), and which Transfer-Encoding and Content-Length combinations are refused
(RFC 9112 §6.1-6.3). Must never read bytes; adapters parse, this decides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from gateway.http.errors import BadGateway, BadRequest, HttpError
from gateway.http.model import HeaderList

_TOKEN_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")


class BodyKind(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until_close"


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
# Final: read-only (mypy checks it; compiled, a write raises) as frozen=True was.
@dataclass(slots=True, init=False)
class BodyFraming:
    kind: Final[BodyKind]
    length: Final[int]

    def __init__(self, kind: BodyKind, length: int = 0) -> None:
        self.kind = kind
        self.length = length

    def __hash__(self) -> int:
        return hash((self.kind, self.length))


NO_BODY = BodyFraming(BodyKind.NONE)
CHUNKED = BodyFraming(BodyKind.CHUNKED)
UNTIL_CLOSE = BodyFraming(BodyKind.UNTIL_CLOSE)


def _te_codings(values: list[bytes], err: type[HttpError], strict_te: bool) -> None:
    """Validate Transfer-Encoding; every obfuscation raises ``err`` with kind ``smuggling``."""
    if len(values) != 1:
        raise err("duplicate transfer-encoding", kind="smuggling")
    raw = values[0]
    if raw != raw.strip(b" \t"):
        raise err("whitespace around transfer-encoding", kind="smuggling")
    codings = [c.strip(b" \t").lower() for c in raw.split(b",")]
    for coding in codings:
        if not coding or any(b not in _TOKEN_CHARS for b in coding):
            raise err("malformed transfer-coding", kind="smuggling")
    if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
        raise err("final transfer-coding is not chunked", kind="smuggling")
    if strict_te and raw != b"chunked":
        raise err("strict_te: only 'chunked' is accepted", kind="smuggling")


def _content_length(values: list[bytes], err: type[HttpError]) -> int:
    if len(values) != 1:
        raise err("duplicate content-length", kind="smuggling")
    raw = values[0]
    if not raw or len(raw) > 19 or not raw.isdigit():
        raise err("invalid content-length", kind="smuggling")
    return int(raw)


def _collect(headers: HeaderList) -> tuple[list[bytes], list[bytes]]:
    te: list[bytes] = []
    cl: list[bytes] = []
    for name, value in headers:
        if name == b"transfer-encoding":
            te.append(value)
        elif name == b"content-length":
            cl.append(value)
    return te, cl


def request_body_framing(
    headers: HeaderList, *, http_version: bytes = b"1.1", strict_te: bool = False
) -> BodyFraming:
    """Framing of a request body, or BadRequest for anything a smuggler could exploit."""
    te, cl = _collect(headers)
    if te:
        if cl:
            raise BadRequest("content-length with transfer-encoding", kind="smuggling")
        if http_version == b"1.0":
            raise BadRequest("transfer-encoding in HTTP/1.0", kind="smuggling")
        _te_codings(te, BadRequest, strict_te)
        return CHUNKED
    if cl:
        length = _content_length(cl, BadRequest)
        return BodyFraming(BodyKind.LENGTH, length) if length else NO_BODY
    return NO_BODY


def response_has_no_body(status: int, request_method: bytes) -> bool:
    """RFC 9112 §6.3 rules 1-2: HEAD, 1xx, 204, 304 and 2xx to CONNECT carry no body."""
    return (
        request_method == b"HEAD"
        or 100 <= status < 200
        or status in (204, 304)
        or (request_method == b"CONNECT" and 200 <= status < 300)
    )


def response_body_framing(status: int, request_method: bytes, headers: HeaderList) -> BodyFraming:
    """Framing of an upstream response; ambiguous framing raises BadGateway (never relayed)."""
    if response_has_no_body(status, request_method):
        return NO_BODY
    te, cl = _collect(headers)
    if te:
        if cl:
            raise BadGateway("content-length with transfer-encoding", kind="upstream_smuggling")
        # A non-chunked final coding would be "until close" (RFC 9112 §6.3 rule 4), but we
        # never relay codings we strip from the head, so it is refused like any other oddity.
        _te_codings(te, BadGateway, strict_te=False)
        return CHUNKED
    if cl:
        return BodyFraming(BodyKind.LENGTH, _content_length(cl, BadGateway))
    return UNTIL_CLOSE
