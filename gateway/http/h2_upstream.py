"""HTTP/2 towards a backend: the decisions the upstream client makes without I/O.

Owns the numbers we advertise to a backend (windows, stream cap), the request header list
a neutral head becomes on an upstream stream (pseudo-headers, ``content-length``) and the
request trailers it may carry, when to PING a quiet connection and give up on it, how many
streams a connection may carry given the peer's SETTINGS, what a backend's GOAWAY or
RST_STREAM means for one stream (refused and retry-safe, reset, or harmless), and the body
length a response head declares. Must never touch I/O, h2 objects or trio.
"""

from __future__ import annotations

from typing import Final

from gateway.http.hop_by_hop import HOP_BY_HOP
from gateway.http.model import HeaderList, RequestHead, first_header

# Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE) and per connection (raised by a
# WINDOW_UPDATE on stream 0 right after the preface). Data is acknowledged only as the consumer
# takes it, so a connection buffers at most CONNECTION_WINDOW_BYTES and a stream at most
# STREAM_WINDOW_BYTES, whatever the backend sends (h2 rejects data past a window).
STREAM_WINDOW_BYTES: Final = 1 << 20
CONNECTION_WINDOW_BYTES: Final = 16 << 20
# Never more streams on one connection than this, even if the backend allows more: past it
# the pool opens another connection (spreads head-of-line blocking and the window above).
MAX_STREAMS_PER_CONNECTION: Final = 100
# Stop opening streams on a connection this close to the stream-id space's end (RFC 9113 §5.1.1).
LAST_USABLE_STREAM_ID: Final = 2**31 - 1 - 2 * MAX_STREAMS_PER_CONNECTION

# Keep-alive: a PING after this long without a byte from the backend, and the connection is
# closed when its ACK has not come this long after (its streams fail; idempotent ones retry).
PING_INTERVAL_S: Final = 30.0
PING_TIMEOUT_S: Final = 10.0
KEEPALIVE_NOTHING: Final = "nothing"
KEEPALIVE_PING: Final = "ping"
KEEPALIVE_CLOSE: Final = "close"

# RFC 9113 §7 error codes we act on.
NO_ERROR: Final = 0x0
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8

# What a reset or GOAWAY means for one stream.
STREAM_REFUSED: Final = "refused"  # nothing processed: the core may retry elsewhere
STREAM_RESET: Final = "reset"  # the stream failed; it may have been processed
STREAM_UNHARMED: Final = "unharmed"  # the response was complete: only the upload stops

# A request body is declared only where the method gives content a meaning, or when there is
# some (RFC 9110 §8.6: no Content-Length on a GET without content).
_BODYLESS_METHODS: Final = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"))
_NO_BODY_STATUSES: Final = frozenset((204, 304))
# Never in a trailer section: connection-specific fields (RFC 9113 §8.2.2; h2 would drop them
# silently and, were nothing left, fail building an empty HEADERS frame) and the fields that
# frame or route a message (RFC 9110 §6.5.1).
_TRAILER_DROP: Final = HOP_BY_HOP | frozenset((b"content-length", b"host"))
_REQUEST_DROP: Final = HOP_BY_HOP | frozenset((b"content-length", b"host"))


def request_headers(head: RequestHead, scheme: bytes, body_length: int | None) -> HeaderList:
    """The header list for an upstream HTTP/2 stream: pseudo-headers first, then the fields
    the forwarding rules kept (already without Host, framing and hop-by-hop), then
    ``content-length`` when the length is known (RFC 9113 §8.1.1 lets h2 check it)."""
    out: HeaderList = [(b":method", head.method), (b":scheme", scheme)]
    if head.authority:
        out.append((b":authority", head.authority))
    if head.method != b"CONNECT":
        out.append((b":path", head.path or b"/"))
    for name, value in head.headers:
        # The forwarding rules removed these already; h2 would reject (``te`` other than
        # "trailers") or silently drop them, and a header list h2 rejects halfway through has
        # already changed its HPACK encoder (the connection is then unusable).
        if name in _REQUEST_DROP and not (
            name == b"te" and value.strip(b" \t").lower() == b"trailers"
        ):
            continue
        out.append((name, value))
    if body_length is not None and (body_length > 0 or head.method not in _BODYLESS_METHODS):
        out.append((b"content-length", str(body_length).encode()))
    return out


def request_trailers(trailers: HeaderList) -> HeaderList:
    """The request trailers an upstream HTTP/2 stream may carry (empty: end with DATA)."""
    return [(n, v) for n, v in trailers if n not in _TRAILER_DROP and not n.startswith(b":")]


def keepalive_action(
    now: float,
    last_received_at: float,
    ping_sent_at: float | None,
    interval_s: float = PING_INTERVAL_S,
    timeout_s: float = PING_TIMEOUT_S,
) -> str:
    """What a connection's keep-alive does at ``now``: nothing, send a PING, or give up."""
    if ping_sent_at is not None:
        return KEEPALIVE_CLOSE if now - ping_sent_at >= timeout_s else KEEPALIVE_NOTHING
    return KEEPALIVE_PING if now - last_received_at >= interval_s else KEEPALIVE_NOTHING


def stream_capacity(peer_max_concurrent_streams: int | None) -> int:
    """How many streams we run at once on one connection (the peer's cap, then ours)."""
    if peer_max_concurrent_streams is None:
        return MAX_STREAMS_PER_CONNECTION
    return max(0, min(peer_max_concurrent_streams, MAX_STREAMS_PER_CONNECTION))


def goaway_fate(stream_id: int, last_stream_id: int) -> str:
    """A GOAWAY names the last stream the peer may process; any above it was not processed
    and is safe to send again on another connection (RFC 9113 §6.8)."""
    return STREAM_REFUSED if stream_id > last_stream_id else STREAM_UNHARMED


def reset_fate(error_code: int, *, response_complete: bool) -> str:
    """What a RST_STREAM from the backend means for our exchange.

    REFUSED_STREAM: nothing was processed (RFC 9113 §8.7) → retry-safe. After a complete
    response any code (usually NO_ERROR, §8.1) only stops our upload. Otherwise the stream
    failed mid-flight.
    """
    if response_complete:
        return STREAM_UNHARMED
    if error_code == REFUSED_STREAM:
        return STREAM_REFUSED
    return STREAM_RESET


def response_body_length(
    status: int, request_method: bytes, headers: HeaderList
) -> tuple[int | None, int | None]:
    """(declared Content-Length, body length the consumer will read); None: unknown.

    A HEAD answer, 204 and 304 carry no content whatever they declare (RFC 9110 §6.4.1).
    A malformed Content-Length is h2's to reject (it checks it against the DATA received).
    """
    raw = first_header(headers, b"content-length")
    declared: int | None = None
    if raw is not None and raw.isdigit():
        declared = int(raw)
    if request_method == b"HEAD" or status in _NO_BODY_STATUSES:
        return declared, 0
    return declared, declared
