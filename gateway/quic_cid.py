"""The server connection IDs of `quic` listeners: who owns a connection, readable from any
packet of it.

Owns the layout of the 8-byte connection IDs the gateway issues (through aioquic, see
workers/quic_connection.py) and its decoding:

    byte 0      worker slot (the CPU slot the worker serves; what a sk_reuseport program
                would select the socket by)
    bytes 1..3  the owning worker process (its pid, 24 bits: unique among live workers, so
                a draining worker and its replacement on the same slot differ even when
                they share a generation)
    bytes 4..7  randomness (RFC 9000 §5.1: IDs must not be linkable by an observer beyond
                what routing needs; 32 bits keeps collisions between one owner's IDs rare)

A datagram whose destination ID names another owner is handed to that owner (the
userspace fallback when no BPF program steers by ID). Client-chosen IDs (the DCID of a
first Initial) are random and may decode to anything; the listener only routes by owner
packets that are not Initials. Pure: the randomness is injected, nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

CID_LEN_BYTES = 8
MAX_SLOT = 0xFF
MAX_OWNER = 0xFFFFFF


class RandomBytes(Protocol):
    def __call__(self, n: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CidOwner:
    slot: int
    owner: int  # the worker's pid (24 bits)


def owner_of(pid: int, slot: int) -> CidOwner:
    """The owner a worker mints for; pids past 24 bits wrap (pid_max is 2**22 by default)."""
    return CidOwner(slot & MAX_SLOT, pid & MAX_OWNER)


def mint(owner: CidOwner, random_bytes: RandomBytes) -> bytes:
    return bytes((owner.slot,)) + owner.owner.to_bytes(3, "big") + random_bytes(4)


def decode(cid: bytes) -> CidOwner | None:
    """The owner a gateway-issued ID names; None for IDs of another length."""
    if len(cid) != CID_LEN_BYTES:
        return None
    return CidOwner(cid[0], int.from_bytes(cid[1:4], "big"))
