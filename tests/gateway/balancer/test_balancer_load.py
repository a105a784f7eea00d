"""Load-aware policies prefer less loaded, faster backends."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.balancer import Balancer


def _backends(*weights: int) -> list[tuple[str, int]]:
    return [(f"10.1.0.{i}:80", w) for i, w in enumerate(weights)]


@pytest.mark.parametrize(
    ("policy", "open_fn"),
    [("least_connections", "connection_opened"), ("least_request", "request_started")],
)
def test_least_loaded_prefers_lowest_ratio(policy: str, open_fn: str) -> None:
    balancer = Balancer(policy, _backends(1, 4, 1), random.Random(1))
    opener = getattr(balancer, open_fn)
    for index, count in ((0, 1), (1, 3), (2, 2)):
        for _ in range(count):
            opener(index)
    # ratios 1/1, 3/4, 2/1: backend 1 wins despite carrying the most.
    assert {balancer.pick([0, 1, 2], None, 0.0) for _ in range(50)} == {1}
    # Among the rest, backend 0 (1/1) beats backend 2 (2/1).
    assert {balancer.pick([0, 2], None, 0.0) for _ in range(50)} == {0}


@pytest.mark.parametrize(
    ("policy", "open_fn"),
    [("least_connections", "connection_opened"), ("least_request", "request_started")],
)
def test_least_loaded_fills_in_weight_proportion(policy: str, open_fn: str) -> None:
    balancer = Balancer(policy, _backends(1, 2, 3), random.Random(2))
    for _ in range(600):
        picked = balancer.pick([0, 1, 2], None, 0.0)
        assert picked is not None
        getattr(balancer, open_fn)(picked)
    loads = [
        s.active_connections if open_fn == "connection_opened" else s.active_requests
        for s in balancer.stats
    ]
    assert loads == [100, 200, 300], f"{policy} concurrent loads {loads} for weights 1:2:3"


def test_least_request_breaks_ties_randomly_not_by_index() -> None:
    balancer = Balancer("least_request", _backends(1, 1, 1), random.Random(3))
    counts: Counter[int] = Counter()
    for _ in range(3000):  # strictly sequential: every pick is an all-idle tie
        picked = balancer.pick([0, 1, 2], None, 0.0)
        assert picked is not None
        balancer.request_started(picked)
        balancer.request_finished(picked, 0.01, 0.0)
        counts[picked] += 1
    assert min(counts.values()) > 800, f"sequential picks {counts} should spread ~1000 each"


def _spread(policy: str, n_requests: int) -> int:
    balancer = Balancer(policy, _backends(1, 1, 1, 1), random.Random(4))
    for _ in range(n_requests):
        picked = balancer.pick([0, 1, 2, 3], None, 0.0)
        assert picked is not None
        balancer.request_started(picked)
    loads = [s.active_requests for s in balancer.stats]
    return max(loads) - min(loads)


def test_p2c_keeps_loads_tight_where_random_does_not() -> None:
    p2c = _spread("p2c", 1000)
    rnd = _spread("random", 1000)
    assert p2c <= 4, f"p2c load spread {p2c} over 4 backends after 1000 in-flight requests"
    assert rnd > p2c, f"random spread {rnd} should exceed p2c spread {p2c}"


def test_p2c_weighted_load_follows_weights() -> None:
    balancer = Balancer("p2c", _backends(1, 3), random.Random(5))
    for _ in range(400):
        picked = balancer.pick([0, 1], None, 0.0)
        assert picked is not None
        balancer.request_started(picked)
    loads = [s.active_requests for s in balancer.stats]
    assert abs(loads[0] - 100) <= 5 and abs(loads[1] - 300) <= 5, (
        f"p2c in-flight loads {loads} for weights 1:3 (±5)"
    )


def test_p2c_prefers_the_idle_of_two() -> None:
    balancer = Balancer("p2c", _backends(1, 1), random.Random(6))
    balancer.request_started(0)
    assert {balancer.pick([0, 1], None, 0.0) for _ in range(30)} == {1}


def _run_ewma(
    latency_of: list[float], picks: int, balancer: Balancer, now: float
) -> tuple[Counter[int], float]:
    counts: Counter[int] = Counter()
    for _ in range(picks):
        picked = balancer.pick([0, 1, 2], None, now)
        assert picked is not None
        balancer.request_started(picked)
        now += 0.01
        balancer.request_finished(picked, latency_of[picked], now)
        counts[picked] += 1
    return counts, now


def test_ewma_moves_away_from_a_backend_whose_latency_grows() -> None:
    balancer = Balancer("ewma", _backends(1, 1, 1), random.Random(7), ewma_decay_s=1.0)
    latency = [0.010, 0.010, 0.010]
    before, now = _run_ewma(latency, 600, balancer, 0.0)
    assert min(before.values()) > 60, f"similar latencies should all get traffic: {before}"
    latency[2] = 0.200
    _run_ewma(latency, 300, balancer, now)  # let the average catch up
    after, _ = _run_ewma(latency, 1000, balancer, now + 3.0)
    share = after[2] / 1000
    assert share < 0.05, f"slow backend still gets {share:.1%} of picks: {after}"
    assert after[2] > 0, "the slow backend is never re-probed, but its decaying average should be"


def test_ewma_probes_unmeasured_backends_first() -> None:
    balancer = Balancer("ewma", _backends(1, 1, 1), random.Random(8))
    balancer.request_started(0)
    balancer.request_finished(0, 0.001, 1.0)
    assert balancer.pick([0, 1, 2], None, 1.0) in (1, 2)
    balancer.request_started(1)  # 1's probe in flight; 2 is still unmeasured and idle
    assert balancer.pick([0, 1, 2], None, 1.0) == 2


def test_ewma_weighs_in_flight_requests_and_weight() -> None:
    balancer = Balancer("ewma", _backends(1, 1), random.Random(9))
    for i in (0, 1):
        balancer.request_started(i)
        balancer.request_finished(i, 0.010, 0.0)
    for _ in range(3):
        balancer.request_started(0)
    assert balancer.pick([0, 1], None, 0.0) == 1
    heavy = Balancer("ewma", _backends(1, 10), random.Random(9))
    for i in (0, 1):
        heavy.request_started(i)
        heavy.request_finished(i, 0.010, 0.0)
    for _ in range(5):
        heavy.request_started(1)  # 0.01 * 6 / 10 = 0.006 < 0.01 * 1 / 1
    assert heavy.pick([0, 1], None, 0.0) == 1


def test_ewma_average_is_time_decayed() -> None:
    from gateway.balancer.base import BackendStats
    from gateway.balancer.latency_ewma import decayed_latency, record_latency

    s = BackendStats("x", 1)
    record_latency(s, 1.0, 0.0, decay_s=10.0)
    assert s.ewma_latency_s == 1.0
    record_latency(s, 0.0, 10.0, decay_s=10.0)  # one time constant later: keep e^-1
    assert s.ewma_latency_s == pytest.approx(0.36788, rel=1e-4)
    record_latency(s, 5.0, 10.0, decay_s=10.0)  # no time elapsed: no weight
    assert s.ewma_latency_s == pytest.approx(0.36788, rel=1e-4)
    assert decayed_latency(s, 20.0, 10.0) == pytest.approx(0.36788 * 0.36788, rel=1e-4)
    assert decayed_latency(s, 5.0, 10.0) == s.ewma_latency_s
