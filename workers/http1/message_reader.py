"""Pull-based HTTP/1.x message reader over a trio stream, parsed by httptools (llhttp).

Owns: feeding bytes to llhttp only when the consumer asks for the next event (so at most one
read of READ_MAX_BYTES is ever queued: the bounded window), header count/size caps enforced
on the head and on the trailer section alike, a raw-byte bound on every parser state that
yields no event (a head still arriving, a trailer field or chunk line without its end), how
the stream ended (clean EOF or reset / TLS without close_notify), and the translation of
parser errors to typed HttpErrors.
Must never decide policy (admission, framing rules) or write to the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import httptools
import trio

from gateway.http.errors import BadGateway, BadRequest, HeadersTooLarge, HttpError
from gateway.http.limits import READ_MAX_BYTES, HttpLimits
from gateway.http.model import HeaderList
from workers.http1.socket_io import receive_some, receive_when_ready, socket_fd, watch

# Field names lowercased, by the spelling received (a few dozen in practice): a dict hit is
# cheaper than lowering a fresh copy per field. Bounded (emptied when full, short names only).
_LOWERED: Final[dict[bytes, bytes]] = {}
_LOWERED_MAX: Final = 1024
_LOWERED_MAX_LEN: Final = 64

# Bound once (compiled, each ``httptools.X`` is a module attribute lookup).
_RequestParser: Final = httptools.HttpRequestParser
_ResponseParser: Final = httptools.HttpResponseParser


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
@dataclass(slots=True, init=False)
class ParsedHead:
    method: bytes  # b"" for responses
    target: bytes  # request target, b"" for responses
    status: int  # 0 for requests
    http_version: bytes
    headers: HeaderList
    upgrade: bool

    def __init__(
        self,
        method: bytes,
        target: bytes,
        status: int,
        http_version: bytes,
        headers: HeaderList,
        upgrade: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.status = status
        self.http_version = http_version
        self.headers = headers
        self.upgrade = upgrade


# Event tags; events are (tag, payload) tuples to keep the hot path allocation-light.
HEAD = "head"
DATA = "data"
TRAILERS = "trailers"
END = "end"
UPGRADE = "upgrade"  # payload: bytes after the upgrade head
EOF_EVENT = "eof"  # peer closed; payload: True when no message was in progress

Event = tuple[str, object]


class EventQueue:
    """The parsed events not yet consumed, first in, first out: a list and a read index.

    A deque always holds a 64-slot block (about 0.7 KiB); this holds no storage while empty
    (it is emptied whenever the last event is taken), and every idle keep-alive connection
    keeps its reader (issue 18). Filled only when empty, so at most one read's events."""

    __slots__ = ("head", "items")

    def __init__(self) -> None:
        self.items: list[Event] = []
        self.head = 0

    def __bool__(self) -> bool:
        return self.head < len(self.items)

    def __len__(self) -> int:
        return len(self.items) - self.head

    def __getitem__(self, index: int) -> Event:
        if index < 0:
            raise IndexError("EventQueue index from the end")
        return self.items[self.head + index]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.items[self.head :])

    def append(self, event: Event) -> None:
        self.items.append(event)

    def popleft(self) -> Event:
        items = self.items
        head = self.head
        if head >= len(items):
            raise IndexError("pop from an empty EventQueue")
        event = items[head]
        head += 1
        if head == len(items):
            items.clear()  # frees the list's storage
            head = 0
        self.head = head
        return event


class _Callbacks:
    """httptools protocol object: turns callbacks into queued events and enforces head caps."""

    def __init__(self, reader: MessageReader) -> None:
        self.r = reader

    def on_message_begin(self) -> None:
        r = self.r
        r.in_message = True
        r.head_done = False
        r.head_bytes = 0
        r.target = b""
        r.headers = []

    def on_url(self, url: bytes) -> None:
        r = self.r
        r.target += url
        r.head_bytes += len(url)
        if r.head_bytes > r.max_header_bytes:
            raise r.too_large("request target too long")

    def on_status(self, status: bytes) -> None:
        self.r.head_bytes += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.r
        r.head_bytes += len(name) + len(value) + 4
        lowered = _LOWERED.get(name)
        if lowered is None:
            lowered = name.lower()
            if len(name) <= _LOWERED_MAX_LEN:
                if len(_LOWERED) >= _LOWERED_MAX:
                    _LOWERED.clear()
                _LOWERED[name] = lowered
        r.headers.append((lowered, value))
        r.progressed = True
        if len(r.headers) > r.max_headers or r.head_bytes > r.max_header_bytes:
            raise r.too_large("header section too large")

    def on_headers_complete(self) -> None:
        r = self.r
        r.head_done = True
        r.progressed = True
        r.head_bytes = 0  # a trailer section gets the head's caps afresh (RFC 9112 §7.1.2)
        p = r.parser
        head = ParsedHead(
            p.get_method() if isinstance(p, _RequestParser) else b"",
            r.target,
            p.get_status_code() if isinstance(p, _ResponseParser) else 0,
            _http_version(p, r),
            r.headers,
            p.should_upgrade(),
        )
        r.headers = []
        r.events.append((HEAD, head))

    def on_body(self, body: bytes) -> None:
        r = self.r
        r.progressed = True
        r.events.append((DATA, body))

    def on_message_complete(self) -> None:
        r = self.r
        if r.headers:  # fields after the last chunk are trailers (RFC 9112 §7.1.2)
            r.events.append((TRAILERS, r.headers))
            r.headers = []
        r.in_message = False
        r.events.append((END, None))


def _http_version(
    p: httptools.HttpRequestParser | httptools.HttpResponseParser, r: MessageReader
) -> bytes:
    """The message's HTTP version. httptools formats it as a str on every call, which costs
    more than the rest of the head. A response whose bytes began a read with ``HTTP/1.1 ``
    is HTTP/1.1 (``MessageReader.feed``). For a request with neither Connection nor
    Proxy-Connection, llhttp keeps it alive exactly when it is HTTP/1.1 (strict llhttp takes
    0.9, 1.0 and 1.1; only Connection-style fields set its keep-alive flags, and a request
    never needs EOF), so ``should_keep_alive()`` answers without the string."""
    if r.starts_http11:
        r.starts_http11 = False
        return b"1.1"
    if isinstance(p, _RequestParser) and p.should_keep_alive():
        for n, _ in r.headers:
            if n == b"connection" or n == b"proxy-connection":
                break
        else:
            return b"1.1"
    version = p.get_http_version()
    return b"1.1" if version == "1.1" else version.encode()


class _NoCallbacks:
    """The protocol object of the spent parsers: no callbacks (httptools calls none)."""


# What a released reader's ``parser`` becomes (see ``MessageReader.release``).
_SPENT_REQUEST: Final = httptools.HttpRequestParser(_NoCallbacks())
_SPENT_RESPONSE: Final = httptools.HttpResponseParser(_NoCallbacks())


class MessageReader:
    """Reads requests (``is_request``) or responses from ``stream``; one per direction."""

    def __init__(self, stream: trio.abc.Stream, limits: HttpLimits, *, is_request: bool) -> None:
        self.stream = stream
        # A plain TCP socket is registered for edge-triggered reads (workers.readiness).
        self.readiness = watch(stream)
        self.is_request = is_request
        self.max_headers = limits.max_headers
        self.max_header_bytes = limits.max_header_bytes
        self.error_type: type[HttpError] = BadRequest if is_request else BadGateway
        self.events = EventQueue()
        callbacks = _Callbacks(self)
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser = (
            httptools.HttpRequestParser(callbacks)
            if is_request
            else httptools.HttpResponseParser(callbacks)
        )
        self.in_message = False
        self.head_done = False
        self.head_bytes = 0
        self.raw_head_bytes = 0
        # Bytes fed since the last event once the head is done: llhttp and httptools hold a
        # trailer field (or skip a chunk extension) until its line ends, so a line that never
        # ends yields nothing and, unbounded, grows the worker (issue 17 item 1).
        self.raw_quiet_bytes = 0
        self.progressed = False
        self.target = b""
        self.headers: HeaderList = []
        self.bytes_read = 0
        self.upgraded = False
        # Bytes after a message that closes the connection were refused (never parsed).
        self.refused_input = False
        self.eof = False
        # The stream ended by an error (reset, TLS without close_notify), not a clean EOF: an
        # until-close body that ends so is truncated, never complete (RFC 9112 §6.3 item 8).
        self.eof_error = False
        self.last_feed_clean_head_end = False
        # The message the last feed began is a response whose status line says HTTP/1.1;
        # its head takes that, and clears this.
        self.starts_http11 = False
        # The next fill follows a request just sent: wait for readability before reading.
        self.wait_first = False
        # The last read took less than it asked for: the socket was empty then, so until the
        # edge-triggered readiness reports an arrival (``Readiness.flagged``) a read can only
        # fail. The next fill then waits first instead of paying for a failing read and its
        # exception (a keep-alive client's next request is one round trip away: most fills).
        self.drained = False
        self.pending = b""  # see take_first_bytes
        self.deferred_error: HttpError | None = None  # see feed
        self.fd = socket_fd(stream)

    def take_first_bytes(self, data: bytes) -> None:
        """Bytes read from the stream before this reader existed (by the acceptor, telling
        HTTP/1.1 from HTTP/2's preface): the next fill takes them instead of reading."""
        self.pending = data

    def release(self) -> None:
        """Its stream is closed: break the reference cycle reader -> parser -> callbacks ->
        reader, so the reader, its events and its stream are freed as soon as the last
        reference goes instead of waiting for Python's cyclic collector (issue 18: with
        clients that reconnect, each connection left ~16 objects to it, and the collections
        they caused were ~5% of a connection's cost). A released reader must not be fed."""
        self.parser = _SPENT_REQUEST if self.is_request else _SPENT_RESPONSE

    def too_large(self, detail: str) -> HttpError:
        if self.error_type is BadRequest:
            return HeadersTooLarge(detail)
        return BadGateway(detail, kind="upstream_headers_too_large")

    @property
    def at_boundary(self) -> bool:
        """Between messages, nothing queued, stream open: the parser may read the next one."""
        return not self.events and not self.in_message and not self.upgraded and not self.eof

    def begin_exchange(self) -> None:
        """Reset per-message bookkeeping when a kept reader starts on a new response."""
        self.bytes_read = 0
        self.head_done = False
        self.last_feed_clean_head_end = False

    def has_complete_message(self) -> bool:
        """The rest of the current message (through END) is already parsed and queued."""
        return any(tag == END for tag, _ in self.events)

    @property
    def idle(self) -> bool:
        """Between messages with nothing buffered: safe to close for drain."""
        return not self.events and not self.in_message and not self.upgraded

    async def next_event(self) -> Event:
        """The next parsed event, reading from the stream only when none is queued."""
        while not self.events:
            await self.fill()
        return self.events.popleft()

    async def fill(self, checkpoint: bool = True) -> None:
        """One read, fed to the parser. EOF queues an EOF_EVENT. ``checkpoint`` False: bytes
        already waiting are taken without yielding (see ``socket_io.receive_some``)."""
        deferred = self.deferred_error
        if deferred is not None:  # see feed
            self.deferred_error = None
            raise deferred
        if self.eof:
            raise self.error_type("read after end of stream", kind="truncated")
        data: bytes | bytearray = self.pending
        if data:  # what the acceptor read first (``take_first_bytes``): no read needed
            self.pending = b""
        else:
            readiness = self.readiness
            try:
                if self.wait_first or (
                    self.drained and readiness is not None and not readiness.flagged(self.fd)
                ):
                    self.wait_first = False
                    data = await receive_when_ready(self.stream, READ_MAX_BYTES, readiness)
                else:
                    data = await receive_some(self.stream, READ_MAX_BYTES, readiness, checkpoint)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
                self.eof_error = True
        self.drained = len(data) < READ_MAX_BYTES
        if not data:
            self.eof = True
            self.events.append((EOF_EVENT, not self.in_message))
            return
        self.bytes_read += len(data)
        self.feed(data)

    def feed(self, data: bytes | bytearray) -> None:
        """Parse ``data`` into events. A request's error behind a complete request in the
        same bytes (a malformed request pipelined after a good one) waits until the events
        before it are taken: the next fill raises it, so the good request is answered first
        (as nginx does) and the bad one gets the error answer."""
        try:
            self._parse(data)
        except HttpError as exc:
            if not self.is_request or not any(tag == END for tag, _ in self.events):
                raise
            self.deferred_error = exc

    def _parse(self, data: bytes | bytearray) -> None:
        was_in_head = not self.head_done
        if not self.in_message and not self.is_request:
            # Between messages, the next one starts at data[0]: these bytes make it HTTP/1.1
            # (or a parse error), without asking httptools for the version (issue 18).
            self.starts_http11 = data.startswith(b"HTTP/1.1 ")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = int(upgrade.args[0])
            self.upgraded = True
            self.events.append((UPGRADE, bytes(data[offset:])))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HttpError):
                raise cause
            if not self.in_message:
                # Between messages llhttp fails only bytes after one that closes the
                # connection (Connection: close, HTTP/1.0 without keep-alive; any other
                # byte starts a message first): a request pipelined behind one that asked
                # for the close is never served (RFC 9112 §9.6), and the message before it
                # stands. The refused bytes are unread input (the close lingers over them).
                self.refused_input = True
                return
            raise self.error_type(f"malformed message: {exc}", kind="parse_error")
        self.last_feed_clean_head_end = (
            was_in_head
            and self.head_done
            and data.endswith(b"\r\n\r\n")
            and not self._body_queued()
        )
        if self.in_message and not self.head_done:
            # A single field may grow inside httptools before any callback fires; bound it
            # by the raw bytes seen while the head is incomplete (slowloris with one header).
            self.raw_head_bytes += len(data)
            if self.raw_head_bytes > self.max_header_bytes:
                raise self.too_large("header section too large")
        else:
            self.raw_head_bytes = 0
            if self.progressed or not self.in_message:
                self.progressed = False
                self.raw_quiet_bytes = 0
            else:
                # After the head, every feed of a well-formed body yields an event (body
                # bytes, a trailer field, the end); feeds that yield none are a trailer
                # field or chunk line still open. Bounded like a head: at most
                # max_header_bytes plus one read is ever held.
                self.raw_quiet_bytes += len(data)
                if self.raw_quiet_bytes > self.max_header_bytes:
                    raise self.too_large("trailer section or chunk line too large")

    def _body_queued(self) -> bool:
        return any(tag == DATA for tag, _ in self.events)

    def resume_after_upgrade(self, leftover: bytes) -> None:
        """Ignore an upgrade offer we decline (e.g. h2c): parse what followed as HTTP again."""
        self.upgraded = False
        if leftover:
            self.feed(leftover)
