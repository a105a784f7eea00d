"""The ``grpc-timeout`` header: the deadline a gRPC client gives its call.

Owns its grammar (PROTOCOL-HTTP2.md: ``TimeoutValue TimeoutUnit``, at most 8 digits, units
H M S m u n), the clamp to the listener's ``grpc_max_deadline_ms``, and the remaining budget
written back for the next hop, so the backend gives up when the client does. Must never read
a clock: the caller passes the remaining time.
"""

from __future__ import annotations

from typing import Final

from gateway.http.model import HeaderList

_UNIT_S: Final = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
_MAX_DIGITS: Final = 8
_MAX_VALUE: Final = 10**_MAX_DIGITS - 1
_NAME: Final = b"grpc-timeout"


def parse_timeout(value: bytes) -> float | None:
    """Seconds, or None when ``value`` is not a valid grpc-timeout."""
    value = value.strip(b" \t")
    if len(value) < 2 or len(value) > _MAX_DIGITS + 1:
        return None
    digits = value[:-1]
    unit = _UNIT_S.get(value[-1])
    if unit is None or not digits.isdigit():
        return None
    return int(digits) * unit


def request_deadline_s(headers: HeaderList, max_s: float) -> float | None:
    """The call's budget in seconds (its grpc-timeout, at most ``max_s``), or None when the
    request carries no valid grpc-timeout (the listener's total timeout then applies)."""
    for name, value in headers:
        if name == _NAME:
            seconds = parse_timeout(value)
            return None if seconds is None else min(seconds, max_s)
    return None


def format_timeout(remaining_s: float) -> bytes:
    """The shortest exact-enough encoding of ``remaining_s`` (never negative): microseconds
    while they fit in 8 digits, then milliseconds, seconds, minutes, hours."""
    us = max(0, int(remaining_s * 1_000_000))
    for divisor, unit in ((1, b"u"), (1_000, b"m"), (1_000_000, b"S"), (60_000_000, b"M")):
        value = us // divisor
        if value <= _MAX_VALUE:
            return b"%d%s" % (value, unit)
    return b"%dH" % min(_MAX_VALUE, us // 3_600_000_000)


def with_timeout(headers: HeaderList, remaining_s: float) -> HeaderList:
    """``headers`` with its grpc-timeout replaced by the remaining budget (added when the
    deadline came from the listener's clamp alone)."""
    out = [(n, v) for n, v in headers if n != _NAME]
    out.append((_NAME, format_timeout(remaining_s)))
    return out
