"""Hypothesis properties for the authority predicate and the traceparent parser."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.http.authority import is_valid_authority, split_authority
from gateway.http.traceparent import apply_traceparent, child_context, parse_traceparent

_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
_HOST = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)
_PORT = st.integers(min_value=0, max_value=65535)


@given(host=_HOST, port=st.none() | _PORT)
def test_valid_hosts_and_ports_are_accepted(host: str, port: int | None) -> None:
    value = host.encode() + (b":%d" % port if port is not None else b"")
    assert split_authority(value) == (host.encode(), None if port is None else b"%d" % port)


@given(
    host=_HOST,
    bad=st.sampled_from([b",", b" ", b"\t", b"\x00", b"\x1f", b"\x7f", b"@", b"/"]),
    at=st.integers(0, 50),
)
def test_forbidden_bytes_anywhere_are_rejected(host: str, bad: bytes, at: int) -> None:
    raw = host.encode()
    cut = at % (len(raw) + 1)
    assert not is_valid_authority(raw[:cut] + bad + raw[cut:])


@given(port=st.text(min_size=1, max_size=6).filter(lambda p: not p.isascii() or not p.isdigit()))
def test_non_digit_ports_are_rejected(port: str) -> None:
    assert not is_valid_authority(b"host:" + port.encode())


def test_ipv6_brackets() -> None:
    assert split_authority(b"[::1]:8080") == (b"[::1]", b"8080")
    assert split_authority(b"[2001:db8::1]") == (b"[2001:db8::1]", None)
    for bad in (b"[::1", b"::1]", b"[::1]x", b"[[::1]]", b"[]", b"[::1]:", b"a:99999", b"", b":80"):
        assert not is_valid_authority(bad), bad


_HEX = st.text(alphabet="0123456789abcdef", min_size=1)


@given(
    trace=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    span=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    flags=st.integers(0, 255),
)
def test_traceparent_roundtrip(trace: str, span: str, flags: int) -> None:
    value = f"00-{trace}-{span}-{flags:02x}".encode()
    parsed = parse_traceparent(value)
    if set(trace) == {"0"} or set(span) == {"0"}:
        assert parsed is None
    else:
        assert parsed is not None and parsed.encode() == value


@given(st.binary(max_size=80))
def test_traceparent_parser_never_raises_and_only_accepts_the_grammar(value: bytes) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert value[:2] != b"ff" and len(parsed.trace_id) == 32 and len(parsed.parent_id) == 16


def test_traceparent_rejects_uppercase_and_bad_versions() -> None:
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(good) is not None
    assert parse_traceparent(good.upper()) is None
    assert parse_traceparent(b"ff" + good[2:]) is None
    assert parse_traceparent(good + b"-extra") is None  # v00 has exactly four fields
    assert parse_traceparent(b"01" + good[2:] + b"-future") is not None


def test_child_keeps_trace_and_uses_injected_rng() -> None:
    inbound = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    a = child_context(inbound, random.Random(7))
    b = child_context(inbound, random.Random(7))
    assert (
        a == b
        and a.trace_id == inbound.trace_id
        and a.parent_id != inbound.parent_id
        and a.flags == 1
    )
    fresh = child_context(None, random.Random(7))
    assert parse_traceparent(fresh.encode()) == fresh


def test_apply_replaces_inbound_and_drops_tracestate_of_an_invalid_parent() -> None:
    headers = [(b"traceparent", b"garbage"), (b"tracestate", b"k=v"), (b"x", b"1")]
    child = apply_traceparent(headers, random.Random(1))
    assert headers == [(b"x", b"1"), (b"traceparent", child.encode())]
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = [(b"traceparent", good), (b"tracestate", b"k=v")]
    child = apply_traceparent(headers, random.Random(1))
    assert (b"tracestate", b"k=v") in headers and child.trace_id == good[3:35]
