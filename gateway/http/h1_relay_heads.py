"""The heads an HTTP/1.1 → HTTP/1.1 proxy forwards, each built in a single pass over the fields.

Owns the hot-path form of a rule chain that is defined elsewhere: the upstream request head is
exactly ``serialize_request_head`` of ``strip_hop_by_hop`` → drop Expect/Content-Length → add
Host when missing → ``add_forwarding_headers`` (with the connection's ``keep_inbound``) →
``apply_traceparent``; the client response head
is exactly ``serialize_response_head`` of ``strip_hop_by_hop`` → drop the framing fields. Tests
hold the two forms byte-for-byte equal, so a rule changes in its own module and here together.
Must never decide a rule of its own, parse bytes or touch I/O; randomness is injected (``rng``).
"""

from __future__ import annotations

import random
from typing import Final

from gateway.http.forwarding import CLIENT_IDENTITY_FIELDS, VIA_TOKEN
from gateway.http.framing import BodyFraming, BodyKind
from gateway.http.hop_by_hop import HOP_BY_HOP
from gateway.http.model import HeaderList
from gateway.http.recent import RecentSet
from gateway.http.traceparent import child_context, parse_traceparent

# Fields that never reach the next hop as received: hop-by-hop (RFC 9110 §7.6.1), the ones we
# re-derive (framing, Expect which we answer ourselves) and the X-Forwarded ones we replace.
_REQUEST_DROP: Final = HOP_BY_HOP | frozenset(
    (b"expect", b"content-length", b"x-forwarded-proto", b"x-forwarded-host")
)
# The same, from a peer whose word about the client's address is not kept (forwarding policy).
_REQUEST_DROP_UNTRUSTED: Final = _REQUEST_DROP | CLIENT_IDENTITY_FIELDS
_RESPONSE_DROP: Final = HOP_BY_HOP | frozenset((b"content-length", b"transfer-encoding"))
_CRLF = b"\r\n"


def _connection_listed(headers: HeaderList) -> frozenset[bytes]:
    """Names listed in Connection (RFC 9110 §7.6.1), the same tokens ``comma_tokens`` yields."""
    out: list[bytes] = []
    for n, v in headers:
        if n == b"connection":
            for part in v.split(b","):
                token = part.strip(b" \t").lower()
                if token:
                    out.append(token)
    return frozenset(out)


def _drop_with_listed(drop: frozenset[bytes], headers: HeaderList) -> frozenset[bytes]:
    """``drop`` plus the names Connection lists; ``drop`` itself when it lists nothing new
    (``keep-alive``/``close``, the usual case, are hop-by-hop already)."""
    values = [v for n, v in headers if n == b"connection"]
    if len(values) == 1 and _NOTHING_NEW.has(values[0]):
        return drop
    listed = _connection_listed(headers)
    if len(values) == 1 and listed <= HOP_BY_HOP:
        _NOTHING_NEW.remember(values[0])  # hop-by-hop names are in every drop set
    return drop if listed <= drop else drop | listed


# Single Connection values seen to list only hop-by-hop names ("keep-alive", "close"...):
# every drop set holds those, so such a value adds nothing to any.
_NOTHING_NEW: Final = RecentSet(max_items=64, max_len=32)


# "HTTP/1.1 200 " per status code seen (at most 900 of them): the status line is prefix + reason.
_STATUS_PREFIX: Final[dict[int, bytes]] = {}


def _status_line(status: int, reason: bytes) -> bytes:
    prefix = _STATUS_PREFIX.get(status)
    if prefix is None:
        prefix = _STATUS_PREFIX[status] = b"HTTP/1.1 %d " % status
    return prefix + reason


def _framing_line(framing: BodyFraming) -> bytes | None:
    if framing.kind is BodyKind.CHUNKED:
        return b"transfer-encoding: chunked"
    if framing.kind is BodyKind.LENGTH:
        return b"content-length: %d" % framing.length
    return None


def upstream_request_head(
    method: bytes,
    path: bytes,
    authority: bytes,
    headers: HeaderList,
    framing: BodyFraming,
    *,
    peer_ip: bytes,
    proto: bytes,
    default_host: bytes,
    rng: random.Random,
    keep_inbound: bool = True,
) -> bytes:
    """The request head for an HTTP/1.1 next hop, with Host, X-Forwarded-*, Via, traceparent.

    ``keep_inbound`` False: the client's X-Forwarded-For, Forwarded and X-Real-IP are dropped
    (``ForwardingPolicy.keeps_inbound`` decides, once per connection).
    """
    drop = _REQUEST_DROP if keep_inbound else _REQUEST_DROP_UNTRUSTED
    if any(n == b"connection" for n, _ in headers):
        drop = _drop_with_listed(drop, headers)
    lines = [method + b" " + path + b" HTTP/1.1"]
    xff: list[bytes] = []
    via: list[bytes] = []
    traceparents: list[bytes] = []
    saw_host = saw_tracestate = False
    for n, v in headers:
        if n in drop:
            continue
        if n == b"x-forwarded-for":
            xff.append(v)
        elif n == b"via":
            via.append(v)
        elif n == b"traceparent":
            traceparents.append(v)
        else:
            if n == b"host":
                saw_host = True
            elif n == b"tracestate":
                saw_tracestate = True
            lines.append(n + b": " + v)
    if not saw_host:
        # HTTP/1.0 without Host: the next hop speaks 1.1 and needs one (RFC 9112 §3.2).
        lines.insert(1, b"host: " + (authority or default_host))
    inbound = parse_traceparent(traceparents[0]) if len(traceparents) == 1 else None
    if inbound is None and saw_tracestate:
        # An invalid parent invalidates its tracestate (W3C Trace Context §3.3).
        lines = [line for line in lines if not line.startswith(b"tracestate: ")]
    xff.append(peer_ip)
    via.append(VIA_TOKEN)
    lines.append(b"x-forwarded-for: " + b", ".join(xff))
    lines.append(b"x-forwarded-proto: " + proto)
    if authority:
        lines.append(b"x-forwarded-host: " + authority)
    lines.append(b"via: " + b", ".join(via))
    lines.append(b"traceparent: " + child_context(inbound, rng).encode())
    framing_line = _framing_line(framing)
    if framing_line is not None:
        lines.append(framing_line)
    lines.append(_CRLF)
    return _CRLF.join(lines)


def client_response_head(
    status: int,
    reason: bytes,
    headers: HeaderList,
    framing: BodyFraming | None,
    *,
    close: bool,
    declared_length: int | None = None,
) -> bytes:
    """The response head toward an HTTP/1.1 client; framing fields come from ``framing``.

    ``framing`` None is a body-less response whose Content-Length (HEAD, 304) is still
    advertised as ``declared_length`` when known.
    """
    drop = _RESPONSE_DROP
    if any(n == b"connection" for n, _ in headers):
        drop = _drop_with_listed(drop, headers)
    lines = [_status_line(status, reason)]
    lines += [n + b": " + v for n, v in headers if n not in drop]
    if framing is not None:
        framing_line = _framing_line(framing)
        if framing_line is not None:
            lines.append(framing_line)
    elif declared_length is not None:
        lines.append(b"content-length: %d" % declared_length)
    if close:
        lines.append(b"connection: close")
    lines.append(_CRLF)
    return _CRLF.join(lines)
