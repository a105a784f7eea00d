"""Every policy honours weight: pick shares over many seeded picks follow the weights."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.balancer import POLICY_NAMES, Balancer

WEIGHTS = (1, 2, 3, 4)
BACKENDS = [(f"10.0.0.{i + 1}:8080", w) for i, w in enumerate(WEIGHTS)]
ELIGIBLE = list(range(len(WEIGHTS)))
PICKS = 20_000
# Binomial std of a share over 20 000 draws is <= 0.0036; 0.02 is > 5 sigma.
SHARE_TOLERANCE = 0.02

KEYED = {"maglev", "ring_hash", "session_affinity"}


def _shares(policy: str, keyed: bool, **options: int) -> list[float]:
    rng = random.Random(1234)
    balancer = Balancer(policy, BACKENDS, random.Random(99), **options)
    counts: Counter[int] = Counter()
    for _ in range(PICKS):
        key = rng.randbytes(16) if keyed else None
        picked = balancer.pick(ELIGIBLE, key, 0.0)
        assert picked is not None
        counts[picked] += 1
    return [counts[i] / PICKS for i in ELIGIBLE]


def _expected() -> list[float]:
    total = sum(WEIGHTS)
    return [w / total for w in WEIGHTS]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_unkeyed_picks_follow_weights(policy: str) -> None:
    shares = _shares(policy, keyed=False)
    for got, want in zip(shares, _expected(), strict=True):
        assert abs(got - want) <= SHARE_TOLERANCE, (
            f"{policy}: shares {shares} vs weights {_expected()} (tolerance ±{SHARE_TOLERANCE})"
        )


@pytest.mark.parametrize("policy", ["maglev", "session_affinity"])
def test_keyed_picks_follow_weights(policy: str) -> None:
    shares = _shares(policy, keyed=True)
    for got, want in zip(shares, _expected(), strict=True):
        assert abs(got - want) <= SHARE_TOLERANCE, (
            f"{policy}: keyed shares {shares} vs weights {_expected()} (tolerance ±{SHARE_TOLERANCE})"
        )


def test_ring_hash_default_vnodes_follow_weights_loosely() -> None:
    # 100 points per unit of weight: a share's relative std is about 1/sqrt(100 * w),
    # 10 % for weight 1, so the stated tolerance is 30 % of the expected share.
    shares = _shares("ring_hash", keyed=True)
    for got, want in zip(shares, _expected(), strict=True):
        assert abs(got - want) <= 0.3 * want, (
            f"ring_hash: shares {shares} vs weights {_expected()} (tolerance ±30% relative)"
        )


def test_ring_hash_many_vnodes_follow_weights_closely() -> None:
    shares = _shares("ring_hash", keyed=True, vnodes_per_weight=2_000)
    for got, want in zip(shares, _expected(), strict=True):
        assert abs(got - want) <= SHARE_TOLERANCE, (
            f"ring_hash(2000 vnodes/weight): shares {shares} vs {_expected()} "
            f"(tolerance ±{SHARE_TOLERANCE})"
        )


def test_maglev_table_slots_follow_weights() -> None:
    from gateway.balancer.maglev import MaglevPolicy

    balancer = Balancer("maglev", BACKENDS, random.Random(0))
    policy = balancer.policy
    assert isinstance(policy, MaglevPolicy)
    balancer.pick(ELIGIBLE, b"warm", 0.0)
    table = policy._tables.get(ELIGIBLE)
    counts = Counter(table)
    total = sum(WEIGHTS)
    for i, w in enumerate(WEIGHTS):
        share = counts[i] / policy.table_size
        assert abs(share - w / total) <= 0.01, (
            f"maglev slot share of backend {i} is {share:.4f}, weight share {w / total} (±0.01)"
        )


@pytest.mark.parametrize("policy", ["round_robin", "weighted_round_robin"])
def test_round_robins_are_exact_per_cycle(policy: str) -> None:
    balancer = Balancer(policy, BACKENDS, random.Random(5))
    cycle = [balancer.pick(ELIGIBLE, None, 0.0) for _ in range(sum(WEIGHTS))]
    assert Counter(cycle) == {i: w for i, w in enumerate(WEIGHTS)}, cycle
