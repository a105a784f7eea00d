"""HTTP/2 header-block attacks against raw frames: CONTINUATION flood (CVE-2024-27316), HPACK
bomb, oversize header lists, and H2→H1 downgrade smuggling. Each gets its reaction, the
worker's memory stays bounded, bystanders on the same worker keep being served, and nothing
smuggled reaches the backend.
"""

from __future__ import annotations

import pytest
from defence_gateway import DefenceGateway, MiB, under_attack
from h2_attack import (
    ENHANCE_YOUR_CALM,
    PROTOCOL_ERROR,
    RawH2,
    request_headers,
)
from hyperframe.frame import SettingsFrame

FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE (default)
RSS_BOUND = 16 * MiB  # observed: under 3 MiB over the baseline


def _send_until_closed(a: RawH2, frames: list[bytes], max_bytes: int) -> int:
    """Send ``frames`` in turn (cycling) until the gateway closes or ``max_bytes`` went out."""
    sent = i = 0
    while sent < max_bytes and not a.seen.closed:
        frame = frames[i % len(frames)]
        a.send(frame)
        sent += len(frame)
        i += 1
        if i % 16 == 0:
            a.pump()
    return sent


def test_continuation_flood_is_cut_off_with_goaway(gw: DefenceGateway) -> None:
    """CVE-2024-27316: a HEADERS frame without END_HEADERS, then 16 KiB CONTINUATION frames
    that never end the block (up to 256 MiB offered). The gateway closes the connection
    with GOAWAY PROTOCOL_ERROR after at most 64 of them (≈1 MiB buffered), and the same
    with empty CONTINUATION frames."""
    before = gw.rejections().get("h2_protocol_error", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        a.send_frame(a.headers_frame(1, a.encode(request_headers()), end_headers=False))
        junk = a.continuation(1, b"\x00" * FRAME, end_headers=False).serialize()
        sent = _send_until_closed(a, [junk], 256 * MiB)
        seen = a.wait_closed(5)
        assert seen.closed
        assert seen.goaway is not None and seen.goaway[0] == PROTOCOL_ERROR, seen.goaway
        assert sent < 16 * MiB, f"{sent / MiB:.0f} MiB accepted before the close"
        a.close()

        b = RawH2(gw.ports["main"])
        b.send_frame(b.headers_frame(1, b.encode(request_headers()), end_headers=False))
        empty = b.continuation(1, b"", end_headers=False).serialize()
        b.send(empty * 10_000)
        seen = b.wait_closed(5)
        assert seen.goaway is not None and seen.goaway[0] == PROTOCOL_ERROR, seen.goaway
        b.close()
    assert gw.wait_rejection("h2_protocol_error", before + 2) == before + 2


def test_hpack_bomb_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """One 4 KiB header enters the HPACK dynamic table, then 1-byte references to it fill a
    HEADERS frame and 30 CONTINUATIONs: ~2 GiB decoded if nobody stopped. The decoder stops
    past max_header_list_size (64 KiB) and the connection ends with ENHANCE_YOUR_CALM."""
    before = gw.rejections().get("header_list_too_large", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        # Literal with incremental indexing, new name (RFC 7541 §6.2.1): index 62 after it.
        name, value = b"x-bomb", b"a" * 4000
        seed = b"\x40" + bytes([len(name)]) + name + b"\x7f" + _hpack_int(len(value), 7) + value
        block = a.encode(request_headers()) + seed
        refs = b"\xbe" * FRAME  # indexed field 62 (RFC 7541 §6.1)
        a.send_frame(a.headers_frame(1, block + refs[: FRAME - len(block)], end_headers=False))
        for i in range(30):
            a.send_frame(a.continuation(1, refs, end_headers=i == 29))
        seen = a.wait_closed(5)
        assert seen.goaway is not None and seen.goaway[0] == ENHANCE_YOUR_CALM, seen.goaway
        assert 1 not in seen.statuses
        a.close()
    assert gw.wait_rejection("header_list_too_large", before + 1) == before + 1


def test_a_huge_header_table_setting_does_not_grow_our_encoder(gw: DefenceGateway) -> None:
    """SETTINGS_HEADER_TABLE_SIZE = 1 GiB would let every response header the gateway sends
    stay indexed in its HPACK encoder for the life of the connection; an encoder may use
    less than the peer allows (RFC 7541 §4.2), and ours keeps the default 4 KiB."""
    a = RawH2(gw.ports["main"], settings={SettingsFrame.HEADER_TABLE_SIZE: 1 << 30})
    a.decoder.max_allowed_table_size = 1 << 30
    for i, sid in enumerate((1, 3, 5)):
        a.headers(sid, request_headers(f"/headers?table={i}"), end=True)
    seen = a.wait_for(lambda s: {1, 3, 5} <= s.ended, 5)
    assert seen.statuses == {1: 200, 3: 200, 5: 200} and seen.goaway is None
    assert a.decoder.header_table.maxsize <= 4096, a.decoder.header_table.maxsize
    a.close()


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    """The continuation bytes of an HPACK integer whose prefix is already all ones."""
    value -= (1 << prefix_bits) - 1
    out = bytearray()
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def test_header_list_over_the_setting_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """Literal headers totalling ~96 KiB (over SETTINGS_MAX_HEADER_LIST_SIZE = 64 KiB, as
    advertised) across HEADERS + CONTINUATION frames: ENHANCE_YOUR_CALM, nothing forwarded."""
    before = gw.rejections().get("header_list_too_large", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        seen = a.wait_for(lambda s: bool(s.settings), 3)
        assert seen.settings[0].get(0x6) == 65_536  # SETTINGS_MAX_HEADER_LIST_SIZE
        big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(96)]
        block = a.encode(request_headers("/headers?oversize=1", extra=big))
        chunks = [block[i : i + FRAME] for i in range(0, len(block), FRAME)]
        a.send_frame(a.headers_frame(1, chunks[0], end_headers=len(chunks) == 1))
        for i, chunk in enumerate(chunks[1:], 1):
            a.send_frame(a.continuation(1, chunk, end_headers=i == len(chunks) - 1))
        seen = a.wait_closed(5)
        assert seen.goaway is not None and seen.goaway[0] == ENHANCE_YOUR_CALM, seen.goaway
        a.close()
    assert not gw.forwarded("oversize=1")
    assert gw.wait_rejection("header_list_too_large", before + 1) == before + 1


def test_too_many_headers_within_the_list_size_get_431_on_that_stream_only(
    gw: DefenceGateway,
) -> None:
    """300 small headers fit the 64 KiB list but not max_headers (256): that stream gets 431
    and the connection serves the next request."""
    a = RawH2(gw.ports["main"])
    many = [(b"x-h-%d" % i, b"v") for i in range(300)]
    a.headers(1, request_headers("/headers?many=1", extra=many), end=True)
    a.headers(3, request_headers("/headers"), end=True)
    seen = a.wait_for(lambda s: {1, 3} <= s.ended, 5)
    assert seen.statuses == {1: 431, 3: 200}
    assert seen.goaway is None
    a.close()
    assert not gw.forwarded("many=1")


# H2→H1 downgrade: fields that would change how the HTTP/1.1 hop frames or routes the
# request (RFC 9113 §8.2.2, anchor-inventory §3 #14/#15).
SMUGGLING_HEADERS = {
    "connection": [(b"connection", b"keep-alive")],
    "keep-alive": [(b"keep-alive", b"timeout=5")],
    "proxy-connection": [(b"proxy-connection", b"keep-alive")],
    "transfer-encoding": [(b"transfer-encoding", b"chunked")],
    "upgrade-h2c": [(b"upgrade", b"h2c")],
    "te-gzip": [(b"te", b"gzip")],
    "te-chunked": [(b"te", b"trailers, chunked")],
    "cl-conflict": [(b"content-length", b"5"), (b"content-length", b"6")],
    "cl-not-digits": [(b"content-length", b"5, 5")],
    "crlf-in-value": [(b"x-a", b"b\r\ntransfer-encoding: chunked")],
}


@pytest.mark.parametrize("kind", sorted(SMUGGLING_HEADERS))
def test_connection_specific_headers_are_rejected_before_the_backend(
    gw: DefenceGateway, kind: str
) -> None:
    """A request carrying the field is a protocol error (h2 ends the connection with GOAWAY
    PROTOCOL_ERROR); it never reaches the HTTP/1.1 backend."""
    before = gw.rejections().get("h2_protocol_error", 0.0)
    a = RawH2(gw.ports["main"])
    a.headers(
        1, request_headers(f"/headers?smuggle={kind}", "POST", SMUGGLING_HEADERS[kind]), end=False
    )
    a.h2.send_data(1, b"hello", end_stream=True)
    a.flush()
    seen = a.wait_closed(5)
    assert 1 not in seen.statuses
    assert seen.goaway is not None and seen.goaway[0] == PROTOCOL_ERROR, seen.goaway
    a.close()
    assert not gw.forwarded(f"smuggle={kind}")
    assert gw.wait_rejection("h2_protocol_error", before + 1) == before + 1


def test_te_trailers_is_allowed(gw: DefenceGateway) -> None:
    a = RawH2(gw.ports["main"])
    a.headers(1, request_headers("/headers?te=trailers", extra=[(b"te", b"trailers")]), end=True)
    seen = a.wait_for(lambda s: 1 in s.ended, 5)
    assert seen.statuses == {1: 200}
    a.close()


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nhost: gateway.test\r\n\r\n"


@pytest.mark.parametrize(
    ("declared", "body"),
    [(5, b"hello" + SMUGGLED), (100, b"hello")],
    ids=["data-beyond-content-length", "data-short-of-content-length"],
)
def test_content_length_and_data_must_agree(gw: DefenceGateway, declared: int, body: bytes) -> None:
    """content-length disagreeing with the DATA sent is a protocol error; no bytes past the
    declared length reach the backend, and a short body is never completed there."""
    before = gw.rejections().get("h2_protocol_error", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        tag = f"cl{declared}"
        extra = [(b"content-length", b"%d" % declared)]
        a.headers(1, request_headers(f"/sha?{tag}", "POST", extra), end=False)
        a.h2.send_data(1, body, end_stream=True)
        a.flush()
        seen = a.wait_closed(5)
        assert 1 not in seen.statuses
        assert seen.goaway is not None and seen.goaway[0] == PROTOCOL_ERROR, seen.goaway
        a.close()
    assert not gw.forwarded("/smuggled")
    assert not [line for line in gw.forwarded(tag) if " 200" in line]
    assert gw.wait_rejection("h2_protocol_error", before + 1) == before + 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/headers?target=space HTTP/1.1"),
        ("GET", "/headers?target=ctl\x7f"),
        ("GET /x", "/headers?target=method"),
    ],
    ids=["space-in-path", "del-in-path", "space-in-method"],
)
def test_request_line_bytes_h2_lets_through_do_not_reach_the_h1_backend(
    gw: DefenceGateway, method: str, path: str
) -> None:
    """h2 accepts a ``:path`` with SP or DEL and a ``:method`` with SP; written into an
    HTTP/1.1 request line they change what the backend parses. The stream is reset with
    PROTOCOL_ERROR (malformed, RFC 9113 §8.1.1); the connection serves the next request."""
    a = RawH2(gw.ports["main"])
    a.headers(1, request_headers(path, method), end=True)
    a.headers(3, request_headers("/headers"), end=True)
    seen = a.wait_for(lambda s: 1 in s.resets and 3 in s.ended, 5)
    assert seen.resets.get(1) == PROTOCOL_ERROR and 1 not in seen.statuses, seen
    assert seen.statuses.get(3) == 200 and seen.goaway is None
    a.close()
    tag = path.split("?")[1][:12]
    assert not gw.forwarded(tag), gw.forwarded(tag)
