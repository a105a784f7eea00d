"""The RFC 8441 bridging rules (gateway/http/ws_bridge), without sockets; the handshake
check is held against wsproto's server side computing the accept value."""

from __future__ import annotations

import random

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from gateway.http.errors import BadGateway
from gateway.http.model import RequestHead
from gateway.http.ws_bridge import (
    accept_for,
    check_upgrade_response,
    extended_connect_fields,
    is_websocket_protocol,
    new_key,
    split_protocol,
    tunnel_response_fields,
    upgrade_fields,
    websocket_head,
)


def test_accept_value_of_rfc6455_example() -> None:
    # RFC 6455 §1.3's worked example.
    assert accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_fresh_keys_are_16_random_bytes_and_wsproto_accepts_our_handshake() -> None:
    rng = random.Random(7)
    keys = {new_key(rng) for _ in range(50)}
    assert len(keys) == 50
    key = new_key(rng)
    fields = upgrade_fields([(b"sec-websocket-key", b"client's"), (b"origin", b"o")], key)
    assert [v for n, v in fields if n == b"sec-websocket-key"] == [key]
    wire = b"GET /chat HTTP/1.1\r\nhost: h\r\n" + b"".join(
        n + b": " + v + b"\r\n" for n, v in fields
    )
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(wire + b"\r\n")
    (request,) = server.events()
    assert isinstance(request, Request)
    answer = server.send(AcceptConnection())
    lines = answer.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = [
        (n.strip().lower(), v.strip())
        for n, v in (line.split(b":", 1) for line in lines[1:] if b":" in line)
    ]
    check_upgrade_response(status, headers, key)  # wsproto's accept matches our key
    with pytest.raises(BadGateway, match="Accept"):
        check_upgrade_response(status, headers, new_key(rng))


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (200, [], "ws_refused"),
        (101, [(b"connection", b"upgrade")], "ws_bad_accept"),
        (101, [(b"upgrade", b"websocket")], "ws_bad_accept"),
        (101, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")], "ws_bad_accept"),
    ],
)
def test_incomplete_upgrade_answers_are_refused(
    status: int, headers: list[tuple[bytes, bytes]], kind: str
) -> None:
    with pytest.raises(BadGateway) as info:
        check_upgrade_response(status, headers, b"k")
    assert info.value.kind == kind


def test_extended_connect_maps_to_a_get_and_back() -> None:
    protocol, rest = split_protocol(
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":path", b"/c")]
    )
    assert protocol == b"websocket" and (b":protocol", b"websocket") not in rest
    assert is_websocket_protocol(b"WebSocket") and not is_websocket_protocol(b"connect-udp")
    head = websocket_head(RequestHead(b"CONNECT", b"https", b"a", b"/c?x", [(b"x", b"1")]))
    assert (head.method, head.path, head.authority) == (b"GET", b"/c?x", b"a")
    forwarded = RequestHead(
        b"GET", b"https", b"a", b"/c", [(b"connection", b"x"), (b"sec-websocket-key", b"k")]
    )
    fields = extended_connect_fields(forwarded, b"http")
    assert fields[:5] == [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/c"),
    ]
    assert (b"sec-websocket-version", b"13") in fields
    assert all(n not in (b"connection", b"sec-websocket-key") for n, _ in fields)


def test_client_200_carries_the_negotiated_fields_only() -> None:
    fields = tunnel_response_fields(
        [
            (b"upgrade", b"websocket"),
            (b"connection", b"upgrade, x-hop"),
            (b"x-hop", b"1"),
            (b"sec-websocket-accept", b"a"),
            (b"sec-websocket-protocol", b"chat"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"set-cookie", b"s=1"),
        ]
    )
    assert fields == [
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"set-cookie", b"s=1"),
    ]
