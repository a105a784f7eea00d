"""The one authority predicate every front applies to Host / :authority.

Owns: is this authority acceptable, and how it splits into host and port. Must never resolve
names or consult config.
"""

from __future__ import annotations

from typing import Final

from gateway.http.recent import RecentSet

# C0 controls, SP, DEL and the delimiters that have no place in an http authority
# (RFC 9110 §4.2: no userinfo; ',' would mean several Host values were folded together).
_FORBIDDEN = frozenset(range(0x00, 0x21)) | {0x7F} | set(b',@/?#\\"<>{}|^`')
_FORBIDDEN_BYTES = bytes(sorted(_FORBIDDEN))


def split_authority(value: bytes) -> tuple[bytes, bytes | None] | None:
    """(host, port or None) for a valid authority, None when it must be rejected."""
    # translate() deletes the forbidden bytes in C: a shorter result means one was present.
    if not value or len(value.translate(None, _FORBIDDEN_BYTES)) != len(value):
        return None
    if value.startswith(b"["):
        close = value.find(b"]")
        if close < 0 or value.count(b"[") != 1 or value.count(b"]") != 1:
            return None
        host = value[: close + 1]
        inner = host[1:-1]
        if not inner or any(chr(b) not in "0123456789abcdefABCDEF:." for b in inner):
            return None
        rest = value[close + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(b":"):
            return None
        port = rest[1:]
    else:
        if value.find(b"[") >= 0 or value.find(b"]") >= 0:  # find: see admission._CR
            return None
        host, sep, port_raw = value.partition(b":")
        if not host:
            return None
        if not sep:
            return host, None
        port = port_raw
    if not port or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return None
    return host, port


# Valid authorities seen lately: a request's Host is almost always one of a few names, and a
# set lookup costs a fraction of the parse. Only valid values are kept.
_VALID_SEEN: Final = RecentSet(max_items=1024, max_len=255)


def is_valid_authority(value: bytes) -> bool:
    if _VALID_SEEN.has(value):
        return True
    if split_authority(value) is None:
        return False
    _VALID_SEEN.remember(value)
    return True
