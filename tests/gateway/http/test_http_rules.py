"""Pure header rules: hop-by-hop, forwarding, admission, framing, responses, wire, pseudo."""

from __future__ import annotations

import random

import pytest

from gateway.http.admission import admit_request
from gateway.http.errors import BadGateway, BadRequest, HeadersTooLarge
from gateway.http.forwarding import add_forwarding_headers
from gateway.http.framing import BodyKind, request_body_framing, response_body_framing
from gateway.http.h1_wire import client_keeps_alive, encode_last_chunk, serialize_request_head
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.limits import HttpLimits
from gateway.http.model import RequestHead, request_from_pseudo, request_to_pseudo
from gateway.http.responses import error_response_h1
from gateway.http.ws_frames import FrameTooLarge, FrameTracker, close_frame


def test_hop_by_hop_and_connection_listed_names_are_removed() -> None:
    headers = [
        (b"connection", b"keep-alive, X-Secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"x"),
        (b"transfer-encoding", b"chunked"),
        (b"accept", b"*/*"),
    ]
    assert strip_hop_by_hop(headers) == [(b"accept", b"*/*")]
    assert strip_hop_by_hop(headers, next_hop_is_h2=True) == [
        (b"te", b"trailers"),
        (b"accept", b"*/*"),
    ]
    assert strip_hop_by_hop([(b"te", b"gzip")], next_hop_is_h2=True) == []


def test_forwarding_headers_append_and_replace() -> None:
    out = add_forwarding_headers(
        [
            (b"x-forwarded-for", b"203.0.113.9"),
            (b"x-forwarded-proto", b"https"),
            (b"via", b"1.0 other"),
        ],
        peer_ip="192.0.2.1",
        proto=b"http",
        host=b"example.test",
    )
    assert dict(out) == {
        b"x-forwarded-for": b"203.0.113.9, 192.0.2.1",
        b"x-forwarded-proto": b"http",
        b"x-forwarded-host": b"example.test",
        b"via": b"1.0 other, 1.1 expressgateway",
    }


def _head(headers, version=b"1.1", path=b"/") -> RequestHead:
    return RequestHead(b"GET", b"http", b"", path, list(headers), version)


@pytest.mark.parametrize(
    ("headers", "version", "error"),
    [
        ([], b"1.1", BadRequest),
        ([(b"host", b"a"), (b"host", b"b")], b"1.1", BadRequest),
        ([(b"host", b"")], b"1.1", BadRequest),
        ([(b"host", b"a b")], b"1.1", BadRequest),
        ([(b"host", b"a:x")], b"1.1", BadRequest),
        ([(b"host", b"a"), (b"x_y", b"1")], b"1.1", BadRequest),
        ([(b"host", b"a"), (b"x", b"a\x00b")], b"1.1", BadRequest),
        ([(b"host", b"a"), (b"bad name", b"1")], b"1.1", BadRequest),
        ([(b"host", b"a")] + [(b"x", b"1")] * 256, b"1.1", HeadersTooLarge),
        ([(b"host", b"a"), (b"x", b"v" * 70_000)], b"1.1", HeadersTooLarge),
    ],
)
def test_admission_rejections(headers, version, error) -> None:
    with pytest.raises(error):
        admit_request(_head(headers, version), HttpLimits())


def test_admission_accepts_and_resolves_authority() -> None:
    head = admit_request(_head([(b"host", b"example.test:8080")]), HttpLimits())
    assert head.authority == b"example.test:8080"
    assert admit_request(_head([], b"1.0"), HttpLimits()).authority == b""
    absolute = admit_request(
        _head([(b"host", b"other")], path=b"http://real.test/p?q"), HttpLimits()
    )
    assert (absolute.authority, absolute.path) == (b"real.test", b"/p?q")
    assert dict(absolute.headers)[b"host"] == b"real.test"


def test_underscore_policies_all_enforced() -> None:
    headers = [(b"host", b"a"), (b"x_auth", b"1")]
    with pytest.raises(BadRequest):
        admit_request(_head(headers), HttpLimits(underscore_policy="reject"))
    assert admit_request(_head(headers), HttpLimits(underscore_policy="drop")).headers == [
        (b"host", b"a")
    ]
    assert admit_request(_head(headers), HttpLimits(underscore_policy="allow")).headers == headers
    with pytest.raises(ValueError):
        HttpLimits(underscore_policy="maybe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked, identity")],
        [(b"transfer-encoding", b" chunked")],
        [(b"transfer-encoding", b"xchunked")],
        [(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked, chunked")],
        [(b"transfer-encoding", b"gzip,,chunked")],
        [(b"content-length", b"3"), (b"content-length", b"3")],
        [(b"content-length", b"3"), (b"content-length", b"4")],
        [(b"content-length", b"3, 3")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"")],
    ],
)
def test_request_framing_smuggling_is_400(headers) -> None:
    with pytest.raises(BadRequest) as info:
        request_body_framing(headers)
    assert info.value.kind == "smuggling"


def test_request_framing_accepts() -> None:
    assert request_body_framing([]).kind is BodyKind.NONE
    assert request_body_framing([(b"content-length", b"0")]).kind is BodyKind.NONE
    assert request_body_framing([(b"content-length", b"10")]).length == 10
    assert request_body_framing([(b"transfer-encoding", b"gzip, chunked")]).kind is BodyKind.CHUNKED
    with pytest.raises(BadRequest):
        request_body_framing([(b"transfer-encoding", b"gzip, chunked")], strict_te=True)
    with pytest.raises(BadRequest):
        request_body_framing([(b"transfer-encoding", b"chunked")], http_version=b"1.0")


def test_response_framing() -> None:
    cl = [(b"content-length", b"5")]
    assert response_body_framing(200, b"HEAD", cl).kind is BodyKind.NONE
    assert response_body_framing(204, b"GET", cl).kind is BodyKind.NONE
    assert response_body_framing(304, b"GET", cl).kind is BodyKind.NONE
    assert response_body_framing(200, b"GET", cl).length == 5
    assert response_body_framing(200, b"GET", []).kind is BodyKind.UNTIL_CLOSE
    with pytest.raises(BadGateway):
        response_body_framing(200, b"GET", [*cl, (b"transfer-encoding", b"chunked")])


def test_error_responses_are_small_and_close() -> None:
    for status in (400, 413, 431, 502, 503, 504):
        wire = error_response_h1(status)
        head, _, body = wire.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status)
        assert b"connection: close" in head and len(body) < 64
        assert b"content-length: %d" % len(body) in head
    assert b"connection" not in error_response_h1(503, close=False)


def test_wire_helpers() -> None:
    head = RequestHead(b"POST", b"http", b"a", b"/x", [(b"host", b"a")])
    from gateway.http.framing import CHUNKED

    assert (
        serialize_request_head(head, CHUNKED)
        == b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert encode_last_chunk([(b"x", b"1")]) == b"0\r\nx: 1\r\n\r\n"
    assert client_keeps_alive(b"1.1", [])
    assert not client_keeps_alive(b"1.1", [(b"connection", b"Close")])
    assert not client_keeps_alive(b"1.0", [(b"connection", b"keep-alive")])


def test_pseudo_header_mapping_roundtrip() -> None:
    head = RequestHead(
        b"GET", b"https", b"a.test", b"/p", [(b"host", b"a.test"), (b"accept", b"*/*")]
    )
    pseudo = request_to_pseudo(head)
    assert pseudo[:4] == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"a.test"),
        (b":path", b"/p"),
    ]
    back = request_from_pseudo(pseudo)
    assert (back.method, back.authority, back.path, back.headers) == (
        b"GET",
        b"a.test",
        b"/p",
        [(b"accept", b"*/*")],
    )
    with pytest.raises(BadRequest):
        request_from_pseudo([(b":method", b"GET"), (b"x", b"1"), (b":path", b"/")])
    with pytest.raises(BadRequest):
        request_from_pseudo(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"a"),
                (b"host", b"b"),
            ]
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        (b"GET /admin", b"/"),  # a space would split the HTTP/1.1 request line differently
        (b"GET", b"/a HTTP/1.1"),
        (b"GET", b"/a\tb"),
        (b"GET", b"/a\x01"),
        (b"GET", b"/a\x7f"),
        (b"G\x00T", b"/"),
    ],
)
def test_pseudo_method_and_path_that_an_h1_request_line_cannot_carry_are_rejected(
    method: bytes, path: bytes
) -> None:
    pseudo = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
    with pytest.raises(BadRequest):
        request_from_pseudo(pseudo)
    assert request_from_pseudo([(b":method", b"M-SEARCH"), (b":scheme", b"http"), (b":path", b"*")])


def test_ws_frame_tracker_boundaries_and_cap() -> None:
    tracker = FrameTracker(max_message_bytes=1000)
    frame = bytes((0x81, 0x85)) + b"\x01\x02\x03\x04" + b"hello"  # masked text "hello"
    tracker.feed(frame[:3])
    assert not tracker.at_boundary
    tracker.feed(frame[3:])
    assert tracker.at_boundary
    big = bytes((0x82, 126)) + (2000).to_bytes(2, "big")
    with pytest.raises(FrameTooLarge):
        tracker.feed(big)
    assert close_frame(1001, masked=False) == b"\x88\x02\x03\xe9"
    masked = close_frame(1001, masked=True, rng=random.Random(1))
    assert masked[:2] == b"\x88\x82" and len(masked) == 8


def test_forwarding_policy_keeps_client_claims_only_from_whom_it_trusts() -> None:
    from gateway.http.forwarding import ForwardingPolicy

    assert ForwardingPolicy("append").keeps_inbound("203.0.113.9")
    assert not ForwardingPolicy("replace").keeps_inbound("10.0.0.1")
    trusted = ForwardingPolicy("trusted", ("10.0.0.0/8", "2001:db8::/32"))
    assert trusted.keeps_inbound("10.1.2.3")
    assert trusted.keeps_inbound("::ffff:10.1.2.3")  # a v4 peer on a dual-stack socket
    assert trusted.keeps_inbound("2001:db8::1")
    assert not trusted.keeps_inbound("203.0.113.9")
    assert not trusted.keeps_inbound("unknown")
    assert trusted == ForwardingPolicy("trusted", ("10.0.0.0/8", "2001:db8::/32"))
    assert ForwardingPolicy() == ForwardingPolicy("append") != trusted
    claims = [
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"forwarded", b"for=1.2.3.4"),
        (b"x-real-ip", b"1.2.3.4"),
        (b"accept", b"*/*"),
    ]
    out = dict(
        add_forwarding_headers(
            claims, peer_ip="203.0.113.9", proto=b"http", host=None, keep_inbound=False
        )
    )
    assert out[b"x-forwarded-for"] == b"203.0.113.9"
    assert b"forwarded" not in out and b"x-real-ip" not in out and out[b"accept"] == b"*/*"
    kept = dict(add_forwarding_headers(claims, peer_ip="10.0.0.1", proto=b"http", host=None))
    assert kept[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.1" and kept[b"forwarded"] == b"for=1.2.3.4"
