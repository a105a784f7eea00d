"""The one 64-bit hash every hash-based policy uses.

Owns `hash64` (BLAKE2b with an 8-byte digest: stable across processes, runs and
Python versions, unlike the builtin `hash`, and done in C so it is fast) and
`mix64`, a murmur3 fmix64 finalizer for combining two already-hashed values
cheaply. It must never use the builtin `hash()` (salted per process, so two
workers would disagree) nor any randomness.
"""

from __future__ import annotations

import hashlib

MASK64 = 0xFFFF_FFFF_FFFF_FFFF
_blake2b = hashlib.blake2b


def hash64(data: bytes, seed: int = 0) -> int:
    """A stable 64-bit hash of `data`; different `seed`s give independent hashes."""
    if seed == 0:
        return int.from_bytes(_blake2b(data, digest_size=8).digest(), "little")
    salt = seed.to_bytes(16, "little")
    return int.from_bytes(_blake2b(data, digest_size=8, salt=salt).digest(), "little")


def mix64(value: int) -> int:
    """murmur3's fmix64: a bijective avalanche of a 64-bit integer."""
    value &= MASK64
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & MASK64
    value ^= value >> 33
    return value
