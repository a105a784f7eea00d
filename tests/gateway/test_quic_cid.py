"""Connection IDs that name their owning worker (gateway/quic_cid.py)."""

from __future__ import annotations

import os
import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.quic_cid import CID_LEN_BYTES, CidOwner, decode, mint, owner_of


@given(slot=st.integers(0, 255), pid=st.integers(1, 2**22), seed=st.integers(0, 2**32))
def test_minted_ids_decode_to_their_owner(slot: int, pid: int, seed: int) -> None:
    rng = random.Random(seed)
    owner = owner_of(pid, slot)
    cid = mint(owner, rng.randbytes)
    assert len(cid) == CID_LEN_BYTES
    assert decode(cid) == owner == CidOwner(slot, pid)


def test_ids_of_one_owner_differ_and_owners_are_told_apart() -> None:
    a, b = owner_of(4242, 0), owner_of(4243, 0)  # a draining worker and its replacement
    ids = {mint(a, os.urandom) for _ in range(1000)}
    assert len(ids) == 1000
    assert {decode(c) for c in ids} == {a}
    assert decode(mint(b, os.urandom)) == b != a


def test_other_lengths_name_no_owner() -> None:
    assert decode(b"\x01\x02\x03") is None
    assert decode(bytes(20)) is None


def test_pids_wrap_to_24_bits() -> None:
    assert owner_of(2**24 + 7, 300) == CidOwner(300 & 0xFF, 7)
