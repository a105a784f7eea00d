"""Round-robin order: plain rotation, smooth interleaving, behaviour across eligibility changes."""

from __future__ import annotations

import random

from gateway.balancer import Balancer


def _equal(n: int) -> list[tuple[str, int]]:
    return [(f"b{i}", 1) for i in range(n)]


def test_round_robin_rotates_in_index_order_from_a_random_start() -> None:
    balancer = Balancer("round_robin", _equal(4), random.Random(3))
    picks = [balancer.pick([0, 1, 2, 3], None, 0.0) for _ in range(8)]
    start = picks[0]
    assert start is not None
    assert picks == [(start + k) % 4 for k in range(8)]


def test_round_robin_start_differs_between_workers() -> None:
    starts = {
        Balancer("round_robin", _equal(8), random.Random(s)).pick(range(8), None, 0.0)
        for s in range(40)
    }
    assert len(starts) > 4, f"first picks of 40 differently seeded workers: {starts}"


def test_round_robin_keeps_rotating_when_a_backend_leaves_and_returns() -> None:
    balancer = Balancer("round_robin", _equal(4), random.Random(0))
    while balancer.pick([0, 1, 2, 3], None, 0.0) != 0:
        pass
    assert [balancer.pick([0, 2, 3], None, 0.0) for _ in range(4)] == [2, 3, 0, 2]
    assert [balancer.pick([0, 1, 2, 3], None, 0.0) for _ in range(4)] == [3, 0, 1, 2]


def test_smooth_wrr_matches_nginx_sequence() -> None:
    # nginx's documented example: weights a=5, b=1, c=1 give a a b a c a a.
    backends = [("a", 5), ("b", 1), ("c", 1)]
    for policy in ("weighted_round_robin", "round_robin"):
        balancer = Balancer(policy, backends, random.Random(0))
        names = [backends[balancer.pick([0, 1, 2], None, 0.0) or 0][0] for _ in range(14)]
        assert "".join(names) == "aabacaa" * 2, (policy, names)


def test_wrr_resets_when_the_eligible_set_changes() -> None:
    backends = [("a", 5), ("b", 1), ("c", 1)]
    balancer = Balancer("weighted_round_robin", backends, random.Random(0))
    balancer.pick([0, 1, 2], None, 0.0)
    seq = [balancer.pick([1, 2], None, 0.0) for _ in range(4)]
    assert seq == [1, 2, 1, 2]
