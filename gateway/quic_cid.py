"""The server connection IDs of `quic` listeners: who owns a connection, readable from any
packet of it, by the kernel's sk_reuseport program and by the workers alike.

Owns the layout of the 12-byte connection IDs the gateway issues (through aioquic, see
workers/quic_connection.py) and its decoding:

    byte 0       GW_CID_MARKER (230): "a gateway-issued ID" for the BPF program
    bytes 1..2   the sk_reuseport worker key, big-endian: the key under which the socket of
                 the worker's CPU sits in its group's sockarray. The supervisor passes it
                 in the worker's Boot (gateway.steering.shared_socket_key(cpu)); one key
                 per CPU, the same for every generation, because every generation on a CPU
                 reads that CPU's socket. kernel/bpf/reuseport_select.bpf.c reads bytes
                 0..2 and selects that key's socket.
    bytes 3..5   the owning worker process (its pid, 24 bits: unique among live workers,
                 so a draining worker and its replacement on the same CPU differ though
                 they share a socket and a key); what the userspace handoff routes by
    bytes 6..11  randomness (RFC 9000 §5.1: IDs must not be linkable by an observer beyond
                 what routing needs; 48 bits keeps collisions between one owner's IDs rare)

The marker and the key's encoding are gateway.steering's (`encode_cid`,
`decode_worker_key`), which mirror kernel/bpf/abi.h (tests/kernel/test_lifecycle.py checks
they agree). `CID_LEN_BYTES` is fixed: it is the short-header DCID length the supervisor
writes into the datapath maps (a short header does not carry the DCID's length).

Two layers deliver a packet to its owner. With the kernel datapath, the sk_reuseport
program puts it on the socket of the CPU its key names, whatever the client's address
(NAT rebinding, a client moving between CPUs: no worker of another CPU sees it). A packet
of a draining worker's connection lands on its CPU's socket too, which its successor on
that CPU reads after the drain began: the userspace handoff (workers/quic_handoff.py)
moves it to the pid named here. Without BPF the handoff is the whole mechanism, between
CPUs as well. Client-chosen IDs (the DCID of a first Initial) are random and may decode to
anything; the listener only routes by owner packets that are not Initials. Pure: the randomness is injected, nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.steering import GROUP_SLOTS, decode_worker_key, encode_cid

PID_BYTES = 3
RANDOM_BYTES = 6
CID_LEN_BYTES = 3 + PID_BYTES + RANDOM_BYTES  # marker + worker key + pid + randomness
SHORT_DCID_LEN_BYTES = CID_LEN_BYTES  # what the supervisor writes as quic_short_dcid_len
MAX_OWNER = 0xFFFFFF


class RandomBytes(Protocol):
    def __call__(self, n: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CidOwner:
    key: int  # the sk_reuseport worker key (gateway.steering.shared_socket_key)
    owner: int  # the worker's pid (24 bits)


def owner_of(pid: int, key: int) -> CidOwner:
    """The owner a worker mints for: its pid (past 24 bits it wraps; pid_max is 2**22 by
    default) and the worker key its Boot carries."""
    if not 0 <= key < GROUP_SLOTS:
        raise ValueError(f"worker key {key} outside 0..{GROUP_SLOTS - 1}")
    return CidOwner(key, pid & MAX_OWNER)


def mint(owner: CidOwner, random_bytes: RandomBytes) -> bytes:
    return encode_cid(
        owner.key, owner.owner.to_bytes(PID_BYTES, "big") + random_bytes(RANDOM_BYTES)
    )


def decode(cid: bytes) -> CidOwner | None:
    """The owner a gateway-issued ID names; None for IDs of another length or marker."""
    if len(cid) != CID_LEN_BYTES:
        return None
    key = decode_worker_key(cid)
    if key is None:
        return None
    return CidOwner(key, int.from_bytes(cid[3 : 3 + PID_BYTES], "big"))
