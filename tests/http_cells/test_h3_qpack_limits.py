"""QPACK and field-section limits of the HTTP/3 front, attacked with raw frames from a real
aioquic client: SETTINGS from [listeners.h3], a request over SETTINGS_MAX_FIELD_SECTION_SIZE
(431 on its stream, the connection serves on), a QPACK bomb (a few KiB of dynamic-table
references that would decode to ~250 MB: 431, the worker's memory bounded), blocked streams
within the limit (served once the encoder stream brings the entry, or 431 when the resumed
section is too large) and over it (connection error QPACK_DECOMPRESSION_FAILED, RFC 9204
§2.1.2). After each attack a second client on the same (single) worker is served.

The attacking client encodes its own requests without the dynamic table, so the encoder
stream carries only the instructions a test writes on it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import psutil
import pytest
from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from cells import hypercorn_backend
from qpack_wire import (
    StaticOnlyEncoder,
    indexed_lines,
    insert,
    section_prefix,
    set_capacity,
    str_literal,
    varint,
)
from running_gateway import RunningGateway, free_port

from tools.make_certs import make_certs

MIB = 1 << 20
LIMIT = 8192  # max_field_section_size of the "small" listener
CAPACITY = 2048  # its qpack_max_table_capacity
BLOCKED = 2  # its qpack_blocked_streams


class RawClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.h3._encoder = StaticOnlyEncoder(self.h3._encoder)  # type: ignore[assignment]
        self.results: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self.body: dict[int, bytes] = {}
        self.status: dict[int, int] = {}
        self.closed: ConnectionTerminated | None = None
        self.gone = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.closed = event
            self.gone.set()
            for fut in self.results.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"closed {event.error_code:#x}"))
        if isinstance(event, StreamReset):
            fut = self.results.get(event.stream_id)
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(f"reset {event.error_code:#x}"))
        for ev in self.h3.handle_event(event):
            self._h3(ev)

    def _h3(self, ev: H3Event) -> None:
        sid = getattr(ev, "stream_id", -1)
        if isinstance(ev, HeadersReceived) and sid not in self.status:
            self.status[sid] = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, DataReceived):
            self.body[sid] = self.body.get(sid, b"") + ev.data
        fut = self.results.get(sid)
        if getattr(ev, "stream_ended", False) and fut is not None and not fut.done():
            fut.set_result((self.status.get(sid, 0), self.body.get(sid, b"")))

    def _future(self, sid: int) -> asyncio.Future[tuple[int, bytes]]:
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.results[sid] = fut
        return fut

    async def get(
        self, authority: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> tuple[int, bytes]:
        sid = self._quic.get_next_available_stream_id()
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", b"/headers"),
            *(headers or []),
        ]
        fut = self._future(sid)
        self.h3.send_headers(sid, fields, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(fut, 10)

    def send_section(self, section: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """A raw HEADERS frame carrying ``section`` on a new request stream, FIN after it."""
        sid = self._quic.get_next_available_stream_id()
        fut = self._future(sid)
        self._quic.send_stream_data(sid, encode_frame(FrameType.HEADERS, section), True)
        self.transmit()
        return fut

    def send_encoder(self, instructions: bytes) -> None:
        stream_id = self.h3._local_encoder_stream_id
        assert stream_id is not None
        self._quic.send_stream_data(stream_id, instructions)
        self.transmit()

    @property
    def peer_settings(self) -> dict[int, int]:
        return dict(self.h3._received_settings or {})


def section(authority: str, *, ric: int = 0, max_capacity: int = 0, dynamic_refs: int = 0) -> bytes:
    """A GET's field section: static pseudo-headers, a literal :authority, then
    ``dynamic_refs`` indexed field lines naming the newest dynamic entry (Base = RIC)."""
    prefix = section_prefix(ric, max_capacity)
    lines = bytes([0xC0 | 17, 0xC0 | 23])  # :method GET, :scheme https (static)
    lines += varint(0, 4, 0x50) + str_literal(authority.encode())  # :authority, static name 0
    lines += varint(1, 4, 0x50) + str_literal(b"/headers")  # :path, static name 1
    lines += indexed_lines(dynamic_refs)  # Indexed Field Line, dynamic, relative index 0
    return prefix + lines


# ---- the gateway ----


def _config(certs: Any, small: int, default: int, backend: int) -> str:
    def listener(name: str, port: int, h3: str) -> str:
        return f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "quic"
[listeners.tls]
cert_path = "{certs.cert}"
key_path = "{certs.key}"
{h3}
[[listeners.backends]]
address = "127.0.0.1:{backend}"
protocol = "h1"
"""

    small_h3 = f"""[listeners.h3]
max_field_section_size = {LIMIT}
qpack_max_table_capacity = {CAPACITY}
qpack_blocked_streams = {BLOCKED}
"""
    return (
        """
[runtime]
workers = 1

[observability]
log_format = "json"
"""
        + listener("small", small, small_h3)
        + listener("default", default, "")
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("h3qpack")
    certs = make_certs(tmp / "certs")
    # UDP ports free now: a TCP-free port may carry another gateway's reuseport QUIC socket.
    backend, small, default = (
        free_port(),
        free_port(socket.SOCK_DGRAM),
        free_port(socket.SOCK_DGRAM),
    )
    with hypercorn_backend(backend):
        gateway = RunningGateway(tmp, _config(certs, small, default, backend))
        try:
            gateway.start()
            gateway.small = small  # type: ignore[attr-defined]
            gateway.default = default  # type: ignore[attr-defined]
            yield gateway
        finally:
            gateway.stop()


def _client_config() -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, idle_timeout=10.0)
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "localhost"
    return config


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _bystander_served(port: int) -> None:
    """Another client of the same worker gets its answer."""
    async with connect(
        "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
    ) as c:
        assert isinstance(c, RawClient)
        status, body = await c.get(f"127.0.0.1:{port}")
        assert status == 200 and b'"headers"' in body


def _worker_rss(gateway: RunningGateway) -> int:
    ((worker,),) = [gateway.ready_workers()]
    return int(psutil.Process(worker["pid"]).memory_info().rss)


def test_settings_announce_the_configured_and_default_qpack_limits(gw: Any) -> None:
    async def settings(port: int) -> dict[int, int]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            assert (await c.get(f"127.0.0.1:{port}"))[0] == 200
            return c.peer_settings

    small = _run(settings(gw.small))
    default = _run(settings(gw.default))
    # 0x1 QPACK_MAX_TABLE_CAPACITY, 0x6 MAX_FIELD_SECTION_SIZE, 0x7 QPACK_BLOCKED_STREAMS
    assert (small[0x1], small[0x6], small[0x7]) == (CAPACITY, LIMIT, BLOCKED)
    assert (default[0x1], default[0x6], default[0x7]) == (4096, 65536, 16)


def test_a_request_over_the_field_section_size_gets_431_and_the_connection_serves_on(
    gw: Any,
) -> None:
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def main() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            # One field over the limit: the HEADERS frame alone is longer than it.
            too_long = await c.get(authority, [(b"x-big", b"a" * (LIMIT + 100))])
            # Many small fields: the frame fits, the decoded section (+32 a field) does not.
            # (200 fields of 53: under the listener's max_headers = 256 and max_header_bytes.)
            many = [(b"x-field-%03d" % i, b"v" * 10) for i in range(200)]
            too_many = await c.get(authority, many)
            after = await c.get(authority, [(b"x-ok", b"a" * 1000)])
            assert c.closed is None
            return too_long, too_many, after

    too_long, too_many, after = _run(main())
    assert too_long[0] == 431
    assert too_many[0] == 431
    assert after[0] == 200 and b"x-ok" in after[1]
    _run(_bystander_served(port))


def test_a_trailer_section_over_the_limit_fails_its_request_only(gw: Any) -> None:
    """The limit applies to a request's trailers too (RFC 9114 §4.2.2: any field section):
    the core serving the request is told; it answers 431 when its response had not begun
    (/sha answers after the whole body), and resets the stream (H3_INTERNAL_ERROR) when it
    had (/echo streams the body back). The connection serves on."""
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def upload(c: RawClient, path: bytes) -> tuple[int, bytes] | str:
        sid = c._quic.get_next_available_stream_id()
        fut = c._future(sid)
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path),
        ]
        c.h3.send_headers(sid, head)
        c.h3.send_data(sid, b"body", end_stream=False)
        c.transmit()
        if path == b"/echo":  # the trailers only once the response has begun
            for _ in range(200):
                if sid in c.status:
                    break
                await asyncio.sleep(0.02)
        c.h3.send_headers(sid, [(b"x-trailer", b"t" * (LIMIT + 100))], end_stream=True)
        c.transmit()
        try:
            return await asyncio.wait_for(fut, 10)
        except ConnectionError as exc:
            return str(exc)

    async def main() -> tuple[Any, Any, tuple[int, bytes]]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            before_head = await upload(c, b"/sha")
            after_head = await upload(c, b"/echo")
            after = await c.get(authority)
            assert c.closed is None
            return before_head, after_head, after

    before_head, after_head, after = _run(main())
    assert before_head[0] == 431
    assert after_head == f"reset {ErrorCode.H3_INTERNAL_ERROR:#x}"
    assert after[0] == 200


def test_a_qpack_bomb_is_refused_before_it_is_decoded(gw: Any) -> None:
    """Default limits (64 KiB sections, a 4 KiB table): one 4000-byte entry referenced 60 000
    times is a 60 KB HEADERS frame that would decode to ~243 MB of header list. Five of them
    get 431 each, the worker's RSS stays within 50 MiB of where it was."""
    port = gw.default
    authority = f"127.0.0.1:{port}"
    before = _worker_rss(gw)

    async def main() -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            assert c.peer_settings.get(0x1, 4096) == 4096
            c.send_encoder(set_capacity(4096) + insert(b"x-bomb", b"b" * 4000))
            bomb = section(authority, ric=1, max_capacity=4096, dynamic_refs=60_000)
            assert len(bomb) < 65_536  # under the frame-length check: the sizer must catch it
            answers = await asyncio.gather(*(c.send_section(bomb) for _ in range(5)))
            after = await c.get(authority)
            assert c.closed is None
            return list(answers), after

    answers, after = _run(main())
    assert [status for status, _ in answers] == [431] * 5
    assert after[0] == 200
    grown = _worker_rss(gw) - before
    assert grown < 50 * MIB, f"worker RSS grew by {grown / MIB:.1f} MiB"
    _run(_bystander_served(port))


def test_blocked_streams_within_the_limit_are_served_once_unblocked(gw: Any) -> None:
    """Two sections (the limit) reference an entry the encoder stream has not brought yet:
    blocked, then decoded once it arrives. A third one, blocked within the limit again
    after those finished, is over the size limit once resumed: 431 on its stream."""
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def main() -> tuple[list[tuple[int, bytes]], tuple[int, bytes], tuple[int, bytes]]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            blocked = section(authority, ric=1, max_capacity=CAPACITY, dynamic_refs=1)
            pending = [c.send_section(blocked) for _ in range(BLOCKED)]
            await asyncio.sleep(0.3)
            assert not any(p.done() for p in pending)  # held, not refused
            c.send_encoder(set_capacity(CAPACITY) + insert(b"x-entry", b"e" * 100))
            served = await asyncio.wait_for(asyncio.gather(*pending), 10)
            # 60 references to a 1000-byte entry: 60 KB decoded, over 8 KiB.
            big = section(authority, ric=2, max_capacity=CAPACITY, dynamic_refs=60)
            late = c.send_section(big)
            await asyncio.sleep(0.3)
            assert not late.done()
            c.send_encoder(insert(b"x-large", b"l" * 1000))
            resumed_too_large = await asyncio.wait_for(late, 10)
            after = await c.get(authority)
            assert c.closed is None
            return list(served), resumed_too_large, after

    served, resumed_too_large, after = _run(main())
    assert [s for s, _ in served] == [200, 200]
    assert all(b'"x-entry"' in body for _, body in served)
    assert resumed_too_large[0] == 431
    assert after[0] == 200
    _run(_bystander_served(port))


def test_a_malformed_request_resumed_after_blocking_resets_its_stream_only(gw: Any) -> None:
    """A section blocked on an entry that turns out to be a connection-specific field
    (`connection: close`, malformed in HTTP/3, RFC 9114 §4.2): once the encoder stream
    unblocks it, that stream is reset with H3_MESSAGE_ERROR and the connection serves on
    (aioquic raises it from the encoder stream's handling, a connection error by itself)."""
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def main() -> tuple[str, tuple[int, bytes]]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            pending = c.send_section(
                section(authority, ric=1, max_capacity=CAPACITY, dynamic_refs=1)
            )
            await asyncio.sleep(0.3)
            assert not pending.done()  # blocked
            c.send_encoder(set_capacity(CAPACITY) + insert(b"connection", b"close"))
            try:
                await asyncio.wait_for(pending, 10)
                outcome = "answered"
            except ConnectionError as exc:
                outcome = str(exc)
            after = await c.get(authority)
            assert c.closed is None, c.closed
            return outcome, after

    outcome, after = _run(main())
    assert outcome == f"reset {ErrorCode.H3_MESSAGE_ERROR:#x}"
    assert after[0] == 200
    _run(_bystander_served(port))


def test_a_blocked_stream_gets_no_credit_for_what_it_buffers(gw: Any) -> None:
    """A stream blocked on QPACK has its bytes buffered unparsed by the H3 layer: the
    gateway extends no flow-control credit for them, so 4 MiB of DATA behind a blocked
    section stop at the stream window (262144) until the entry arrives; then the request
    is served."""
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def main() -> tuple[int, int]:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            sid = c._quic.get_next_available_stream_id()
            fut = c._future(sid)
            blocked = section(authority, ric=1, max_capacity=CAPACITY, dynamic_refs=1)
            frames = encode_frame(FrameType.HEADERS, blocked)
            frames += encode_frame(FrameType.DATA, b"d" * (4 * MIB))
            c._quic.send_stream_data(sid, frames, True)
            c.transmit()
            await asyncio.sleep(0.5)
            credit = c._quic._streams[sid].max_stream_data_remote
            assert not fut.done()
            c.send_encoder(set_capacity(CAPACITY) + insert(b"x-entry", b"e"))
            status, _ = await asyncio.wait_for(fut, 10)
            return credit, status

    credit, status = _run(main())
    assert credit <= 262_144
    assert status == 200


def test_more_blocked_streams_than_announced_is_a_decompression_failure(gw: Any) -> None:
    """RFC 9204 §2.1.2: a stream blocked beyond SETTINGS_QPACK_BLOCKED_STREAMS is a
    connection error QPACK_DECOMPRESSION_FAILED; the worker serves other clients on."""
    port = gw.small
    authority = f"127.0.0.1:{port}"

    async def main() -> int:
        async with connect(
            "127.0.0.1", port, configuration=_client_config(), create_protocol=RawClient
        ) as c:
            assert isinstance(c, RawClient)
            blocked = section(authority, ric=1, max_capacity=CAPACITY, dynamic_refs=1)
            for _ in range(BLOCKED + 1):
                c.send_section(blocked)
            await asyncio.wait_for(c.gone.wait(), 10)
            assert c.closed is not None
            return c.closed.error_code

    assert _run(main()) == ErrorCode.QPACK_DECOMPRESSION_FAILED
    _run(_bystander_served(port))
