"""What a hash policy hashes: the `hash_key` spec and extracting the key from a request.

Owns the spec grammar — `client_ip` | `header:NAME` | `cookie:NAME` | `path` |
`quic_cid` — parsed into a frozen `HashKeySpec`, and `extract_key`, which returns
the key bytes for one request or None when the request has none (the policy then
falls back to a weighted random pick). Rules:

- header names match case-insensitively (RFC 9110 §5.1); repeated fields are
  joined with ", " (RFC 9110 §5.3); an empty value counts as absent;
- cookies are read from every `Cookie` field (HTTP/2 may split it, RFC 9113
  §8.2.3) as `name=value` pairs separated by ";" (RFC 6265 §5.4, §4.2.1); names
  match case-sensitively, the first pair with the name wins, the value is taken
  as sent (DQUOTEs included), an empty value counts as absent;
- `path` is the request target's path without the query string;
- `client_ip` is the peer address as text, without port.

It must never see a socket or decode bytes it does not need to.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = b" \t"


class HashKeyKind(enum.Enum):
    CLIENT_IP = "client_ip"
    HEADER = "header"
    COOKIE = "cookie"
    PATH = "path"
    QUIC_CID = "quic_cid"


@dataclass(frozen=True, slots=True)
class HashKeySpec:
    kind: HashKeyKind
    name: bytes | None = None  # header name (lower-cased) or cookie name (as written)

    def __str__(self) -> str:
        if self.name is None:
            return self.kind.value
        return f"{self.kind.value}:{self.name.decode('ascii')}"


_BARE = {
    "client_ip": HashKeyKind.CLIENT_IP,
    "path": HashKeyKind.PATH,
    "quic_cid": HashKeyKind.QUIC_CID,
}
_NAMED = {"header": HashKeyKind.HEADER, "cookie": HashKeyKind.COOKIE}
_GRAMMAR = "expected client_ip, header:NAME, cookie:NAME, path or quic_cid"


def _is_token(name: str) -> bool:
    return bool(name) and name.isascii() and all(c in _TCHAR for c in name.encode("ascii"))


def parse_hash_key(spec: str) -> HashKeySpec:
    """Parse a `hash_key` string; ValueError with the accepted grammar otherwise."""
    bare = _BARE.get(spec)
    if bare is not None:
        return HashKeySpec(bare)
    prefix, sep, name = spec.partition(":")
    kind = _NAMED.get(prefix)
    if kind is None or not sep:
        raise ValueError(f"invalid hash_key {spec!r}: {_GRAMMAR}")
    if not _is_token(name):
        raise ValueError(
            f"invalid hash_key {spec!r}: {prefix} name {name!r} must be a non-empty token "
            "(letters, digits and !#$%&'*+-.^_`|~)"
        )
    raw = name.encode("ascii")
    return HashKeySpec(kind, raw.lower() if kind is HashKeyKind.HEADER else raw)


def _header_value(headers: Sequence[tuple[bytes, bytes]], lower_name: bytes) -> bytes | None:
    values = [value.strip(_OWS) for name, value in headers if name.lower() == lower_name]
    joined = b", ".join(v for v in values if v)
    return joined or None


def _cookie_value(headers: Sequence[tuple[bytes, bytes]], cookie_name: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for pair in value.split(b";"):
            pair_name, eq, pair_value = pair.strip(_OWS).partition(b"=")
            if eq and pair_name.strip(_OWS) == cookie_name:
                pair_value = pair_value.strip(_OWS)
                return pair_value or None
    return None


def extract_key(
    spec: HashKeySpec,
    *,
    client_ip: str,
    headers: Sequence[tuple[bytes, bytes]] | None,
    path: bytes | None,
    quic_cid: bytes | None,
) -> bytes | None:
    """The bytes to hash for one request under `spec`, or None if the request lacks them."""
    kind = spec.kind
    if kind is HashKeyKind.CLIENT_IP:
        return client_ip.encode("ascii", "surrogateescape") if client_ip else None
    if kind is HashKeyKind.QUIC_CID:
        return quic_cid or None
    if kind is HashKeyKind.PATH:
        if not path:
            return None
        return path.partition(b"?")[0] or None
    if headers is None or spec.name is None:
        return None
    if kind is HashKeyKind.HEADER:
        return _header_value(headers, spec.name)
    return _cookie_value(headers, spec.name)
