"""Admission checks on a parsed request head before anything is forwarded.

Owns: header count cap, header-name/value hygiene, the underscore policy, and Host /
authority rules (RFC 9112 §3.2). Returns a normalised head or raises a typed HttpError.
Must never add proxy headers (see ``forwarding``) or touch I/O.
"""

from __future__ import annotations

from typing import Final

from gateway.http.authority import is_valid_authority
from gateway.http.errors import BadRequest, HeadersTooLarge
from gateway.http.limits import HttpLimits
from gateway.http.model import HeaderList, RequestHead
from gateway.http.recent import RecentSet

_TOKEN_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
_ABSOLUTE_PREFIXES = (b"http://", b"https://")
# Byte membership tests use the byte's code (``13 in value``): CPython's ``b"\r" in value``
# first tries the operand as an int, and raising + clearing that TypeError costs more than
# the search itself.
_CR: Final = 0x0D
_LF: Final = 0x0A
_NUL: Final = 0x00
_UNDERSCORE: Final = 0x5F


# Field names seen valid lately (a few dozen in practice): a set lookup instead of a scan per
# field. Only valid names are kept.
_NAMES_SEEN: Final = RecentSet(max_items=1024, max_len=64)


def is_field_name(name: bytes) -> bool:
    """A lowercase RFC 9110 token (names reach us lowercased)."""
    if _NAMES_SEEN.has(name):
        return True
    # translate() deletes the token bytes in C: anything left is not a token character.
    if not name or name.translate(None, _TOKEN_BYTES):
        return False
    _NAMES_SEEN.remember(name)
    return True


def is_field_value(value: bytes) -> bool:
    """No CR, LF or NUL: the bytes that could split or truncate a field on the next hop."""
    return _CR not in value and _LF not in value and _NUL not in value


def header_section_bytes(headers: HeaderList) -> int:
    """Size as HTTP/1.1 would carry it: ``name: value\\r\\n`` per field."""
    return sum(len(n) + len(v) + 4 for n, v in headers)


def apply_underscore_policy(headers: HeaderList, limits: HttpLimits) -> HeaderList:
    """reject: 400 on any '_' in a name (auth-bypass vector); drop: remove those; allow: keep."""
    policy = limits.underscore_policy
    if policy == "allow":
        return headers
    if not any(_UNDERSCORE in n for n, _ in headers):
        return headers
    if policy == "reject":
        raise BadRequest("underscore in header name", kind="underscore_header")
    return [(n, v) for n, v in headers if _UNDERSCORE not in n]


def _split_absolute_target(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, path) for an absolute-form target (RFC 9112 §3.2.2), else None."""
    lowered = target[:8].lower()
    for prefix in _ABSOLUTE_PREFIXES:
        if lowered.startswith(prefix):
            rest = target[len(prefix) :]
            cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=-1)
            if cut < 0:
                return rest, b"/"
            path = rest[cut:]
            return rest[:cut], path if path.startswith(b"/") else b"/" + path
    return None


def _resolve_authority(head: RequestHead) -> None:
    hosts = [v for n, v in head.headers if n == b"host"]
    if len(hosts) > 1:
        raise BadRequest("multiple host headers", kind="bad_authority")
    absolute = None if head.path.startswith(b"/") else _split_absolute_target(head.path)
    if absolute is not None:
        head.authority, head.path = absolute
    elif hosts:
        head.authority = hosts[0]
    if not hosts and head.http_version == b"1.1":
        raise BadRequest("HTTP/1.1 request without host", kind="bad_authority")
    if hosts and not is_valid_authority(hosts[0]):
        raise BadRequest("invalid host", kind="bad_authority")
    if (
        head.authority
        and not (hosts and head.authority == hosts[0])
        and not is_valid_authority(head.authority)
    ):
        raise BadRequest("invalid authority", kind="bad_authority")
    if absolute is not None and hosts and hosts[0] != head.authority:
        # RFC 9112 §3.2.2 says the target wins; we rewrite Host so the next hop agrees.
        head.headers = [(n, head.authority if n == b"host" else v) for n, v in head.headers]


def admit_request(head: RequestHead, limits: HttpLimits) -> RequestHead:
    """Check and normalise ``head`` in place; return it for chaining."""
    if len(head.headers) > limits.max_headers:
        raise HeadersTooLarge("too many headers", kind="too_many_headers")
    if header_section_bytes(head.headers) > limits.max_header_bytes:
        raise HeadersTooLarge("header section too large")
    for name, value in head.headers:
        if not is_field_name(name):
            raise BadRequest("invalid header name", kind="bad_header")
        if not is_field_value(value):
            raise BadRequest("invalid header value", kind="bad_header")
    target_ok = (
        head.path.startswith(b"/")
        or head.path == b"*"
        or _split_absolute_target(head.path) is not None
    )
    if not target_ok and head.method != b"CONNECT":
        raise BadRequest("invalid request target", kind="bad_target")
    head.headers = apply_underscore_policy(head.headers, limits)
    _resolve_authority(head)
    return head
