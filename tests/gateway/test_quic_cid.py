"""Connection IDs that name their owning worker (gateway/quic_cid.py): the sk_reuseport
worker key the BPF program reads and the pid the userspace handoff reads."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import steering
from gateway.quic_cid import (
    CID_LEN_BYTES,
    SHORT_DCID_LEN_BYTES,
    CidOwner,
    decode,
    mint,
    owner_of,
)


@given(
    key=st.integers(0, steering.GROUP_SLOTS - 1),
    pid=st.integers(1, 2**22),
    seed=st.integers(0, 2**32),
)
def test_minted_ids_decode_to_their_owner(key: int, pid: int, seed: int) -> None:
    rng = random.Random(seed)
    owner = owner_of(pid, key)
    cid = mint(owner, rng.randbytes)
    assert len(cid) == CID_LEN_BYTES == SHORT_DCID_LEN_BYTES <= steering.CID_MAX_BYTES
    assert decode(cid) == owner == CidOwner(key, pid)


@given(cpu=st.integers(0, steering.MAX_CPUS - 1))
def test_the_key_the_bpf_program_reads_is_the_cpus_socket_key(cpu: int) -> None:
    cid = mint(owner_of(4242, steering.shared_socket_key(cpu)), os.urandom)
    # what kernel/bpf/reuseport_select.bpf.c reads: the marker byte, then a 16-bit key
    assert cid[0] == steering.CID_MARKER
    assert steering.decode_worker_key(cid) == steering.shared_socket_key(cpu)
    # the key the supervisor's plan gives that CPU's socket (every generation shares it)
    plan = steering.plan_steering({cpu: {steering.ListenerKey(443, 17, 4): 7}})
    assert dict(plan.groups[steering.ListenerKey(443, 17, 4)].sockets) == {
        steering.shared_socket_key(cpu): 7
    }
    # a short header (flags, then the DCID) yields the whole ID at the fixed length
    assert steering.quic_dcid(b"\x40" + cid + b"\x00\x01", SHORT_DCID_LEN_BYTES) == cid


def test_ids_of_one_owner_differ_and_owners_are_told_apart() -> None:
    key = steering.shared_socket_key(0)
    a, b = owner_of(4242, key), owner_of(4243, key)  # a drained worker and its replacement
    ids = {mint(a, os.urandom) for _ in range(1000)}
    assert len(ids) == 1000
    assert {decode(c) for c in ids} == {a}
    assert decode(mint(b, os.urandom)) == b != a


def test_other_lengths_or_markers_name_no_owner() -> None:
    assert decode(b"\x01\x02\x03") is None
    assert decode(bytes(20)) is None
    assert decode(bytes(CID_LEN_BYTES)) is None  # no marker: a client-chosen ID


def test_pids_wrap_to_24_bits_and_keys_stay_in_the_sockarray() -> None:
    assert owner_of(2**24 + 7, 3) == CidOwner(3, 7)
    with pytest.raises(ValueError, match="worker key 256"):
        owner_of(1, steering.GROUP_SLOTS)
