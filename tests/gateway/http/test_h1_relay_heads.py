"""The single-pass relay heads equal the rule chain they stand for, byte for byte."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.admission import is_field_name
from gateway.http.authority import is_valid_authority
from gateway.http.forwarding import add_forwarding_headers
from gateway.http.framing import CHUNKED, NO_BODY, BodyFraming, BodyKind
from gateway.http.h1_relay_heads import client_response_head, upstream_request_head
from gateway.http.h1_wire import serialize_request_head, serialize_response_head
from gateway.http.hop_by_hop import strip_hop_by_hop
from gateway.http.model import HeaderList, RequestHead, ResponseHead
from gateway.http.traceparent import apply_traceparent

_VALID_PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# Names that each rule treats specially, plus ordinary ones; values that matter to them.
_NAMES = st.sampled_from(
    [
        b"host",
        b"connection",
        b"keep-alive",
        b"te",
        b"transfer-encoding",
        b"content-length",
        b"expect",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
        b"via",
        b"traceparent",
        b"tracestate",
        b"x-custom",
        b"accept",
        b"proxy-authorization",
    ]
)
_VALUES = st.sampled_from(
    [
        b"1",
        b"a.example",
        b"close",
        b"keep-alive, x-custom",
        b" Via , tracestate",
        b"host",
        b"traceparent",
        b"chunked",
        b"for=192.0.2.60;proto=http",
        b"x-real-ip",
        _VALID_PARENT,
        b"00-zz",
        b"",
    ]
)
_HEADERS = st.lists(st.tuples(_NAMES, _VALUES), max_size=12)
_FRAMINGS = st.sampled_from([NO_BODY, CHUNKED, BodyFraming(BodyKind.LENGTH, 42)])


def _composed_request(
    head: RequestHead,
    framing: BodyFraming,
    peer_ip: str,
    default_host: bytes,
    seed: int,
    keep_inbound: bool = True,
) -> bytes:
    """The chain exactly as the proxy applied it before the single-pass form existed."""
    headers = strip_hop_by_hop(head.headers)
    headers = [(n, v) for n, v in headers if n not in (b"expect", b"content-length")]
    if not any(n == b"host" for n, _ in headers):
        headers.insert(0, (b"host", head.authority or default_host))
    headers = add_forwarding_headers(
        headers,
        peer_ip=peer_ip,
        proto=b"http",
        host=head.authority or None,
        keep_inbound=keep_inbound,
    )
    apply_traceparent(headers, random.Random(seed))
    upstream = RequestHead(head.method, head.scheme, head.authority, head.path, headers)
    return serialize_request_head(upstream, framing)


@settings(max_examples=400, deadline=None)
@given(
    headers=_HEADERS,
    authority=st.sampled_from([b"", b"a.example", b"a.example:8080"]),
    framing=_FRAMINGS,
    seed=st.integers(0, 2**32),
    keep_inbound=st.booleans(),
)
def test_upstream_request_head_equals_the_rule_chain(
    headers: HeaderList, authority: bytes, framing: BodyFraming, seed: int, keep_inbound: bool
) -> None:
    head = RequestHead(b"POST", b"http", authority, b"/p?q=1", list(headers))
    expected = _composed_request(head, framing, "10.0.0.1", b"10.9.9.9:80", seed, keep_inbound)
    got = upstream_request_head(
        head.method,
        head.path,
        head.authority,
        head.headers,
        framing,
        peer_ip=b"10.0.0.1",
        proto=b"http",
        default_host=b"10.9.9.9:80",
        rng=random.Random(seed),
        keep_inbound=keep_inbound,
    )
    assert got == expected
    assert head.headers == headers  # the inbound list is never modified


@settings(max_examples=300, deadline=None)
@given(
    headers=_HEADERS,
    status=st.sampled_from([200, 204, 304, 404, 502]),
    framing=st.sampled_from([None, NO_BODY, CHUNKED, BodyFraming(BodyKind.LENGTH, 7)]),
    close=st.booleans(),
    declared=st.sampled_from([None, 0, 12]),
)
def test_client_response_head_equals_the_rule_chain(
    headers: HeaderList,
    status: int,
    framing: BodyFraming | None,
    close: bool,
    declared: int | None,
) -> None:
    kept = [
        (n, v)
        for n, v in strip_hop_by_hop(headers)
        if n not in (b"content-length", b"transfer-encoding")
    ]
    expected = serialize_response_head(
        ResponseHead(status, b"Reason", kept), framing, close=close, declared_length=declared
    )
    got = client_response_head(
        status, b"Reason", headers, framing, close=close, declared_length=declared
    )
    assert got == expected


def test_request_head_example_reads_as_documented() -> None:
    got = upstream_request_head(
        b"GET",
        b"/",
        b"",
        [(b"connection", b"x-drop"), (b"x-drop", b"1"), (b"traceparent", _VALID_PARENT)],
        NO_BODY,
        peer_ip=b"192.0.2.1",
        proto=b"http",
        default_host=b"10.0.0.2:8080",
        rng=random.Random(1),
    )
    lines = got.split(b"\r\n")
    assert lines[0] == b"GET / HTTP/1.1"
    assert lines[1] == b"host: 10.0.0.2:8080"  # HTTP/1.0 style request without Host
    assert b"x-forwarded-for: 192.0.2.1" in lines
    assert b"via: 1.1 expressgateway" in lines
    assert any(
        line.startswith(b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-") for line in lines
    )
    assert not any(line.startswith(b"x-drop") for line in lines)
    assert got.endswith(b"\r\n\r\n")


@given(st.binary(max_size=12))
def test_fast_byte_class_checks_match_their_definitions(value: bytes) -> None:
    token = set(b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~")
    assert is_field_name(value) == (bool(value) and all(b in token for b in value))
    forbidden = set(range(0x21)) | {0x7F} | set(b',@/?#\\"<>{}|^`')
    if any(b in forbidden for b in value):
        assert not is_valid_authority(value)


def test_remembered_connection_values_never_hide_a_listed_name() -> None:
    # "close" lists only a hop-by-hop name and is remembered; "expect" is dropped from
    # requests (we answer Expect ourselves) but is an ordinary field in responses, so a
    # Connection that lists it must still remove it from the response.
    for _ in range(2):  # the second pass runs on the remembered values
        close = client_response_head(200, b"OK", [(b"connection", b"close")], NO_BODY, close=False)
        assert b"connection" not in close.lower()
        head = client_response_head(
            200, b"OK", [(b"connection", b"expect"), (b"expect", b"x")], NO_BODY, close=False
        )
        assert b"expect" not in head
        kept = client_response_head(200, b"OK", [(b"expect", b"x")], NO_BODY, close=False)
        assert b"expect: x" in kept


@given(st.binary(max_size=300))
def test_remembered_names_and_authorities_answer_as_the_checks_do(value: bytes) -> None:
    # Asked twice: the second answer may come from the bounded memo of valid values.
    first = (is_field_name(value), is_valid_authority(value))
    assert (is_field_name(value), is_valid_authority(value)) == first
