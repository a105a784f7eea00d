"""The HTTP/2 upstream client's pure decisions (gateway/http/h2_upstream.py)."""

from __future__ import annotations

from gateway.http.h2_upstream import (
    KEEPALIVE_CLOSE,
    KEEPALIVE_NOTHING,
    KEEPALIVE_PING,
    MAX_STREAMS_PER_CONNECTION,
    STREAM_REFUSED,
    STREAM_RESET,
    STREAM_UNHARMED,
    goaway_fate,
    keepalive_action,
    request_headers,
    request_trailers,
    reset_fate,
    response_body_length,
    stream_capacity,
)
from gateway.http.model import RequestHead


def test_request_headers_put_pseudo_headers_first_and_declare_a_known_length() -> None:
    head = RequestHead(b"POST", b"https", b"svc", b"/p?q", [(b"x-a", b"1"), (b"te", b"trailers")])
    assert request_headers(head, b"http", 3) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"svc"),
        (b":path", b"/p?q"),
        (b"x-a", b"1"),
        (b"te", b"trailers"),
        (b"content-length", b"3"),
    ]


def test_request_headers_omit_a_zero_length_for_bodyless_methods_and_unknown_lengths() -> None:
    get = RequestHead(b"GET", b"http", b"svc", b"/")
    assert (b"content-length", b"0") not in request_headers(get, b"http", 0)
    post = RequestHead(b"POST", b"http", b"svc", b"/")
    assert (b"content-length", b"0") in request_headers(post, b"http", 0)
    assert all(n != b"content-length" for n, _ in request_headers(post, b"http", None))


def test_stream_capacity_is_the_peer_cap_bounded_by_ours() -> None:
    assert stream_capacity(2) == 2
    assert stream_capacity(None) == MAX_STREAMS_PER_CONNECTION
    assert stream_capacity(2**31) == MAX_STREAMS_PER_CONNECTION
    assert stream_capacity(0) == 0


def test_goaway_refuses_only_streams_above_the_last_stream_id() -> None:
    assert goaway_fate(1, 1) == STREAM_UNHARMED
    assert goaway_fate(3, 1) == STREAM_REFUSED
    assert goaway_fate(1, 0) == STREAM_REFUSED


def test_reset_fate() -> None:
    assert reset_fate(0x7, response_complete=False) == STREAM_REFUSED
    assert reset_fate(0x2, response_complete=False) == STREAM_RESET
    assert reset_fate(0x0, response_complete=False) == STREAM_RESET
    assert reset_fate(0x0, response_complete=True) == STREAM_UNHARMED


def test_response_body_length() -> None:
    assert response_body_length(200, b"GET", [(b"content-length", b"10")]) == (10, 10)
    assert response_body_length(200, b"HEAD", [(b"content-length", b"10")]) == (10, 0)
    assert response_body_length(304, b"GET", []) == (None, 0)
    assert response_body_length(200, b"GET", []) == (None, None)


def test_request_trailers_drop_connection_specific_framing_and_pseudo_fields() -> None:
    trailers = [
        (b"x-sum", b"1"),
        (b"connection", b"close"),
        (b"te", b"trailers"),
        (b"content-length", b"3"),
        (b":path", b"/"),
        (b"x-other", b"2"),
    ]
    assert request_trailers(trailers) == [(b"x-sum", b"1"), (b"x-other", b"2")]


def test_keepalive_pings_a_quiet_connection_and_gives_up_without_an_ack() -> None:
    assert keepalive_action(10.0, 5.0, None, 30.0, 10.0) == KEEPALIVE_NOTHING
    assert keepalive_action(40.0, 5.0, None, 30.0, 10.0) == KEEPALIVE_PING
    assert keepalive_action(45.0, 5.0, 40.0, 30.0, 10.0) == KEEPALIVE_NOTHING
    assert keepalive_action(50.0, 5.0, 40.0, 30.0, 10.0) == KEEPALIVE_CLOSE


def test_request_headers_drop_connection_specific_fields_but_keep_te_trailers() -> None:
    head = RequestHead(
        b"GET",
        b"http",
        b"svc",
        b"/",
        [
            (b"connection", b"x"),
            (b"te", b"gzip"),
            (b"te", b"Trailers"),
            (b"host", b"h"),
            (b"a", b"1"),
        ],
    )
    assert request_headers(head, b"http", None)[4:] == [(b"te", b"Trailers"), (b"a", b"1")]
