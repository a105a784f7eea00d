"""The neutral HTTP message model every front and back adapter speaks.

Owns request/response heads, header lists, trailers and the HTTP/2-HTTP/3 pseudo-header
mapping. Header names are lowercase bytes; values are bytes as received. Must never parse a
wire format or touch I/O: bodies are async streams owned by the adapters (see ``limits`` for
their chunk size and window).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.http.errors import BadGateway, BadRequest

Header = tuple[bytes, bytes]
HeaderList = list[Header]
Trailers = HeaderList


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
@dataclass(slots=True, init=False)
class RequestHead:
    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: HeaderList
    # The front's protocol version: b"1.0", b"1.1", b"2", b"3".
    http_version: bytes

    def __init__(
        self,
        method: bytes,
        scheme: bytes,
        authority: bytes,
        path: bytes,
        headers: HeaderList | None = None,
        http_version: bytes = b"1.1",
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.headers = [] if headers is None else headers
        self.http_version = http_version


@dataclass(slots=True, init=False)
class ResponseHead:
    status: int
    reason: bytes
    headers: HeaderList
    http_version: bytes

    def __init__(
        self,
        status: int,
        reason: bytes = b"",
        headers: HeaderList | None = None,
        http_version: bytes = b"1.1",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = [] if headers is None else headers
        self.http_version = http_version


def header_values(headers: HeaderList, name: bytes) -> list[bytes]:
    """Every value of ``name`` (lowercase) in order."""
    return [v for n, v in headers if n == name]


def first_header(headers: HeaderList, name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


def comma_tokens(headers: HeaderList, name: bytes) -> list[bytes]:
    """Lowercased, OWS-stripped, non-empty list elements of every ``name`` field (RFC 9110 §5.6.1)."""
    out: list[bytes] = []
    for n, v in headers:
        if n == name:
            for part in v.split(b","):
                token = part.strip(b" \t").lower()
                if token:
                    out.append(token)
    return out


def without(headers: HeaderList, names: frozenset[bytes]) -> HeaderList:
    return [(n, v) for n, v in headers if n not in names]


# --- pseudo-header mapping (RFC 9113 §8.3, RFC 9114 §4.3) ---------------------------------

_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
_TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
# Bytes no request-target may hold (RFC 3986 §2): SP, controls, DEL. h2 lets them through in
# ``:path``; written into an HTTP/1.1 request line they would change what the next hop parses.
_NOT_IN_TARGET = bytes(range(0x21)) + b"\x7f"


def request_to_pseudo(head: RequestHead) -> HeaderList:
    """Header list for an H2/H3 next hop: pseudo-headers first, ``host`` folded into :authority."""
    out: HeaderList = [(b":method", head.method), (b":scheme", head.scheme)]
    if head.authority:
        out.append((b":authority", head.authority))
    if head.method != b"CONNECT":
        out.append((b":path", head.path or b"/"))
    out.extend((n, v) for n, v in head.headers if n != b"host")
    return out


def request_from_pseudo(headers: HeaderList, http_version: bytes = b"2") -> RequestHead:
    """Build a head from an H2/H3 header list; malformed pseudo-headers raise BadRequest."""
    pseudo: dict[bytes, bytes] = {}
    regular: HeaderList = []
    for name, value in headers:
        if name.startswith(b":"):
            if regular:
                raise BadRequest("pseudo-header after regular header", kind="pseudo_header")
            if name not in _REQUEST_PSEUDO or name in pseudo:
                raise BadRequest(f"bad pseudo-header {name!r}", kind="pseudo_header")
            pseudo[name] = value
        else:
            regular.append((name, value))
    method = pseudo.get(b":method")
    if not method:
        raise BadRequest("missing :method", kind="pseudo_header")
    if method != b"CONNECT" and not (pseudo.get(b":scheme") and pseudo.get(b":path")):
        raise BadRequest("missing :scheme or :path", kind="pseudo_header")
    if method.translate(None, _TOKEN_BYTES):  # RFC 9110 §9.1: a method is a token
        raise BadRequest("invalid :method", kind="pseudo_header")
    path = pseudo.get(b":path", b"")
    if len(path.translate(None, _NOT_IN_TARGET)) != len(path):
        raise BadRequest("invalid :path", kind="pseudo_header")
    authority = pseudo.get(b":authority")
    host = first_header(regular, b"host")
    if authority is not None and host is not None and authority != host:
        raise BadRequest(":authority and host disagree", kind="bad_authority")
    return RequestHead(
        method=method,
        scheme=pseudo.get(b":scheme", b""),
        authority=authority if authority is not None else (host or b""),
        path=path,
        headers=regular,
        http_version=http_version,
    )


def response_to_pseudo(head: ResponseHead) -> HeaderList:
    return [(b":status", str(head.status).encode()), *head.headers]


def response_from_pseudo(headers: HeaderList, http_version: bytes = b"2") -> ResponseHead:
    if not headers or headers[0][0] != b":status":
        raise BadGateway("missing :status", kind="upstream_protocol")
    raw = headers[0][1]
    if len(raw) != 3 or not raw.isdigit():
        raise BadGateway("bad :status", kind="upstream_protocol")
    rest = headers[1:]
    if any(n.startswith(b":") for n, _ in rest):
        raise BadGateway("unexpected pseudo-header", kind="upstream_protocol")
    return ResponseHead(status=int(raw), headers=list(rest), http_version=http_version)
