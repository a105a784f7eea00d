"""The byte layout of one entry of the shared connection-ID table (a BPF LRU hash map).

Owns the key and value encodings that the supervisor (which creates the map, kernel/)
and every worker (which reads and writes it through the map's fd) must agree on:

    key   24 bytes: CID length (u8), the CID zero-padded to 20 bytes, 3 zero bytes
    value 16 bytes: backend key (u64, little-endian), last seen (u64 ms, CLOCK_MONOTONIC)

The backend key is a stable 63-bit hash of the backend's id ("host:port"), not its list
index, so entries keep their meaning across reloads that reorder or change backends.
CLOCK_MONOTONIC is one clock for every process of the machine, so a worker can judge an
entry another worker (or generation) wrote. Must never: depend on a process's state.
"""

from __future__ import annotations

import struct

from gateway.balancer.key_hash import hash64
from gateway.passthrough.public_header import CID_MAX_BYTES

KEY_BYTES = 24
VALUE_BYTES = 16
_VALUE = struct.Struct("<QQ")
_BACKEND_SEED = 0x51434944  # "QCID"


def backend_key(backend_id: str) -> int:
    """The table's name for a backend: 63 bits of a seeded hash of its id, never 0."""
    return (hash64(backend_id.encode(), _BACKEND_SEED) >> 1) or 1


def encode_key(cid: bytes) -> bytes:
    n = len(cid)
    if not 0 < n <= CID_MAX_BYTES:
        raise ValueError(f"connection ID length {n} outside 1..{CID_MAX_BYTES}")
    return bytes([n]) + cid + bytes(KEY_BYTES - 1 - n)


def encode_value(backend: int, seen_ms: int) -> bytes:
    return _VALUE.pack(backend, seen_ms)


def decode_value(raw: bytes) -> tuple[int, int]:
    """(backend key, last seen ms)."""
    backend, seen_ms = _VALUE.unpack(raw)
    return backend, seen_ms
