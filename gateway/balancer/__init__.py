"""Load-balancing policies over a backend set: pure, injected `rng` and `now`.

Owns the public face of the balancer package. It must never perform I/O.
"""

from gateway.balancer.balancer import DEFAULT_EWMA_DECAY_S, Balancer
from gateway.balancer.base import BackendStats, Policy
from gateway.balancer.errors import AccountingError
from gateway.balancer.hash_key import HashKeyKind, HashKeySpec, extract_key, parse_hash_key
from gateway.balancer.key_hash import hash64
from gateway.balancer.registry import HASH_POLICY_NAMES, POLICY_NAMES, make_policy

__all__ = [
    "DEFAULT_EWMA_DECAY_S",
    "HASH_POLICY_NAMES",
    "POLICY_NAMES",
    "AccountingError",
    "BackendStats",
    "Balancer",
    "HashKeyKind",
    "HashKeySpec",
    "Policy",
    "extract_key",
    "hash64",
    "make_policy",
    "parse_hash_key",
]
