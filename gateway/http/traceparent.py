"""W3C Trace Context ``traceparent``: parse the inbound value or synthesise one, and derive
the child sent upstream.

Owns the traceparent grammar (W3C Trace Context Level 1 §3.2). Randomness is injected
(``rng``); this module must never read the clock or a global random source.
"""

from __future__ import annotations

import binascii
import random
from dataclasses import dataclass
from typing import Final

_HEX = frozenset(b"0123456789abcdef")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
_FLAGS_HEX: Final = tuple(b"-%02x" % flags for flags in range(256))


# init=False + explicit __init__: mypyc builds it natively (a generated __init__ runs interpreted).
# Final: read-only (mypy checks it; compiled, a write raises) as frozen=True was.
@dataclass(slots=True, init=False)
class TraceContext:
    trace_id: Final[bytes]  # 32 lowercase hex
    parent_id: Final[bytes]  # 16 lowercase hex
    flags: Final[int]

    def __init__(self, trace_id: bytes, parent_id: bytes, flags: int) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags

    def __hash__(self) -> int:
        return hash((self.trace_id, self.parent_id, self.flags))

    def encode(self) -> bytes:
        return b"00-" + self.trace_id + b"-" + self.parent_id + _FLAGS_HEX[self.flags & 0xFF]


def _is_hex(value: bytes) -> bool:
    return bool(value) and all(b in _HEX for b in value)


def parse_traceparent(value: bytes) -> TraceContext | None:
    """The context in ``value``, or None when it is not a valid traceparent (then re-synthesise)."""
    if len(value) < 55:
        return None
    version = value[:2]
    if not _is_hex(version) or version == b"ff":
        return None
    if version == b"00" and len(value) != 55:
        return None
    # Future versions may append fields after a '-' (§3.2.4); we read only the v00 prefix.
    if len(value) > 55 and value[55:56] != b"-":
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id, parent_id, flags = value[3:35], value[36:52], value[53:55]
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, int(flags, 16))


def _random_hex(rng: random.Random, bits: int) -> bytes:
    while True:
        n = rng.getrandbits(bits)
        if n:
            return binascii.hexlify(n.to_bytes(bits // 8, "big"))  # cheaper than b"%0*x" %


def child_context(inbound: TraceContext | None, rng: random.Random) -> TraceContext:
    """Keep the trace id (or start a sampled-off trace) and give the next hop a new span id."""
    if inbound is None:
        ids = _random_hex(rng, 192)  # one draw for a 128-bit trace id and a 64-bit span id
        trace_id, span_id = ids[:32], ids[32:]
        if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:  # all-zero ids are invalid
            trace_id, span_id = _random_hex(rng, 128), _random_hex(rng, 64)
        return TraceContext(trace_id, span_id, 0)
    return TraceContext(inbound.trace_id, _random_hex(rng, 64), inbound.flags)


def apply_traceparent(headers: list[tuple[bytes, bytes]], rng: random.Random) -> TraceContext:
    """Replace every inbound traceparent with the child; drop tracestate if the parent was invalid."""
    inbound_values = [v for n, v in headers if n == b"traceparent"]
    inbound = parse_traceparent(inbound_values[0]) if len(inbound_values) == 1 else None
    child = child_context(inbound, rng)
    drop = {b"traceparent"} if inbound is not None else {b"traceparent", b"tracestate"}
    headers[:] = [(n, v) for n, v in headers if n not in drop]
    headers.append((b"traceparent", child.encode()))
    return child
