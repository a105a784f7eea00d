"""The policy names and how each is constructed.

Owns `POLICY_NAMES` (the eleven names accepted by `[listeners.balancer] policy`),
the options each policy accepts, and `make_policy`. Unknown names and options are
refused with a ValueError that lists what is accepted. It must never hold
per-backend state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from gateway.balancer.base import BackendStats, Policy
from gateway.balancer.ewma import EwmaPolicy
from gateway.balancer.least_connections import LeastConnectionsPolicy
from gateway.balancer.least_request import LeastRequestPolicy
from gateway.balancer.maglev import MaglevPolicy
from gateway.balancer.p2c import P2CPolicy
from gateway.balancer.random_policy import RandomPolicy
from gateway.balancer.ring_hash import RingHashPolicy
from gateway.balancer.round_robin import RoundRobinPolicy
from gateway.balancer.session_affinity import SessionAffinityPolicy
from gateway.balancer.weighted_random import WeightedRandomPolicy
from gateway.balancer.weighted_round_robin import WeightedRoundRobinPolicy

_CLASSES: dict[str, Callable[..., Policy]] = {
    "round_robin": RoundRobinPolicy,
    "weighted_round_robin": WeightedRoundRobinPolicy,
    "random": RandomPolicy,
    "weighted_random": WeightedRandomPolicy,
    "least_connections": LeastConnectionsPolicy,
    "least_request": LeastRequestPolicy,
    "p2c": P2CPolicy,
    "ewma": EwmaPolicy,
    "maglev": MaglevPolicy,
    "ring_hash": RingHashPolicy,
    "session_affinity": SessionAffinityPolicy,
}

POLICY_NAMES: tuple[str, ...] = tuple(_CLASSES)

# Integer options a policy accepts besides (stats, rng); ewma's decay comes from the Balancer.
POLICY_OPTIONS: Mapping[str, frozenset[str]] = {
    "maglev": frozenset({"table_size"}),
    "ring_hash": frozenset({"vnodes_per_weight", "max_ring_size"}),
}

HASH_POLICY_NAMES: frozenset[str] = frozenset({"maglev", "ring_hash", "session_affinity"})


def make_policy(
    name: str,
    stats: Sequence[BackendStats],
    rng: random.Random,
    *,
    ewma_decay_s: float,
    options: Mapping[str, int],
) -> Policy:
    """Construct the policy `name` over `stats`; ValueError on an unknown name or option."""
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(
            f"unknown balancer policy {name!r}; expected one of {', '.join(POLICY_NAMES)}"
        )
    allowed = POLICY_OPTIONS.get(name, frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"balancer policy {name!r} takes no option {', '.join(unknown)}; accepted: {accepted}"
        )
    if name == "ewma":
        return EwmaPolicy(stats, rng, decay_s=ewma_decay_s)
    return cls(stats, rng, **options)
