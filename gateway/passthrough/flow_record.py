"""The byte layout of one entry of the shared flow table (a BPF LRU hash map).

A flow is one client address towards one backend. Its entry names the local UDP port
the gateway sends that flow's datagrams from, so every worker and generation that
handles the flow sends from the same address (joining the port with SO_REUSEPORT):
the backend sees one peer address for the connection however the gateway's workers
come and go — no migration, and a Retry token bound to the address stays valid.

    key   32 bytes: family (u8: 4|6), 0, client port (u16 BE), client IP (16 bytes,
          IPv4 in the first 4), backend key (u64 LE), 4 zero bytes
    value 16 bytes: local port (u16 LE), 6 zero bytes, last seen (u64 ms, CLOCK_MONOTONIC)

Must never: depend on a process's state.
"""

from __future__ import annotations

import ipaddress
import struct

KEY_BYTES = 32
VALUE_BYTES = 16
_KEY = struct.Struct(">BBH16s")
_TAIL = struct.Struct("<Q4x")
_VALUE = struct.Struct("<H6xQ")


def encode_key(ip: str, port: int, backend: int) -> bytes:
    addr = ipaddress.ip_address(ip.partition("%")[0])
    return _KEY.pack(addr.version, 0, port, addr.packed.ljust(16, b"\0")) + _TAIL.pack(backend)


def encode_value(local_port: int, seen_ms: int) -> bytes:
    return _VALUE.pack(local_port, seen_ms)


def decode_value(raw: bytes) -> tuple[int, int]:
    """(local port, last seen ms)."""
    port, seen_ms = _VALUE.unpack(raw)
    return port, seen_ms
