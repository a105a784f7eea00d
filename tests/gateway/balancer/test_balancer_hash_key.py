"""hash_key specs: parsing, and key extraction from headers, cookies, path, IP and QUIC CID."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.balancer import HashKeyKind, HashKeySpec, extract_key, parse_hash_key


@pytest.mark.parametrize(
    ("spec", "kind", "name"),
    [
        ("client_ip", HashKeyKind.CLIENT_IP, None),
        ("path", HashKeyKind.PATH, None),
        ("quic_cid", HashKeyKind.QUIC_CID, None),
        ("header:X-User-Id", HashKeyKind.HEADER, b"x-user-id"),
        ("cookie:SESSIONID", HashKeyKind.COOKIE, b"SESSIONID"),
    ],
)
def test_parse_valid(spec: str, kind: HashKeyKind, name: bytes | None) -> None:
    parsed = parse_hash_key(spec)
    assert parsed == HashKeySpec(kind, name)
    assert parse_hash_key(str(parsed)) == parsed


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "ip",
        "header",
        "header:",
        "cookie:",
        "header:a b",
        "cookie:x;y",
        "Client_IP",
        "path:x",
        "header:é",
        "cookie:a=b",
        "quic_cid:",
    ],
)
def test_parse_invalid(spec: str) -> None:
    with pytest.raises(ValueError, match="hash_key"):
        parse_hash_key(spec)


@given(st.text(max_size=30))
def test_parse_never_raises_anything_but_value_error(spec: str) -> None:
    try:
        parse_hash_key(spec)
    except ValueError:
        pass


def _key(spec: str, headers: list[tuple[bytes, bytes]] | None = None, **kw: object) -> bytes | None:
    args: dict[str, object] = {
        "client_ip": "203.0.113.9",
        "headers": headers,
        "path": None,
        "quic_cid": None,
    }
    args.update(kw)
    return extract_key(parse_hash_key(spec), **args)  # type: ignore[arg-type]


def test_client_ip() -> None:
    assert _key("client_ip") == b"203.0.113.9"
    assert _key("client_ip", client_ip="2001:db8::1") == b"2001:db8::1"


def test_header_is_case_insensitive_and_joins_repeats() -> None:
    headers = [(b"Host", b"a"), (b"X-User", b" alice "), (b"x-user", b"bob")]
    assert _key("header:x-USER", headers) == b"alice, bob"
    assert _key("header:x-other", headers) is None
    assert _key("header:x-user", [(b"x-user", b"  ")]) is None
    assert _key("header:x-user", None) is None


def test_cookie_per_rfc6265() -> None:
    headers = [
        (b"cookie", b"theme=dark; SID=abc123"),
        (b"Cookie", b"SID=later; sid=lower; tok=a=b"),
    ]
    assert _key("cookie:SID", headers) == b"abc123"
    assert _key("cookie:sid", headers) == b"lower"  # names are case-sensitive
    assert _key("cookie:tok", headers) == b"a=b"  # split at the first '='
    assert _key("cookie:theme", headers) == b"dark"
    assert _key("cookie:missing", headers) is None
    assert _key("cookie:q", [(b"cookie", b'q="quoted"')]) == b'"quoted"'
    assert _key("cookie:e", [(b"cookie", b"e=; f=1")]) is None
    assert _key("cookie:f", [(b"cookie", b"junk;;f=1")]) == b"1"


def test_path_drops_query() -> None:
    assert _key("path", path=b"/api/v1/users?id=3") == b"/api/v1/users"
    assert _key("path", path=b"/") == b"/"
    assert _key("path", path=None) is None


def test_quic_cid() -> None:
    assert _key("quic_cid", quic_cid=b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04"
    assert _key("quic_cid", quic_cid=b"") is None
