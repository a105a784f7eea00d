"""Hypothesis: for any weights >= 1, eligible subset, key, counters and time, a pick is eligible."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.balancer import POLICY_NAMES, Balancer

OPTIONS = {"maglev": {"table_size": 251}, "ring_hash": {"vnodes_per_weight": 5}}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[list[int]], list[bytes | None]]:
    weights = draw(st.lists(st.integers(1, 50), min_size=1, max_size=12))
    n = len(weights)
    subsets = draw(
        st.lists(
            st.lists(st.integers(0, n - 1), unique=True, max_size=n).map(sorted),
            min_size=1,
            max_size=6,
        )
    )
    keys = draw(st.lists(st.none() | st.binary(max_size=20), min_size=1, max_size=6))
    return weights, subsets, keys


@pytest.mark.parametrize("policy", POLICY_NAMES)
@settings(max_examples=60, deadline=None)
@given(scenario=scenarios(), seed=st.integers(0, 2**32), start_s=st.floats(0, 1e6))
def test_pick_is_always_eligible(
    policy: str,
    scenario: tuple[list[int], list[list[int]], list[bytes | None]],
    seed: int,
    start_s: float,
) -> None:
    weights, subsets, keys = scenario
    rng = random.Random(seed)
    balancer = Balancer(
        policy, [(f"h{i}", w) for i, w in enumerate(weights)], rng, **OPTIONS.get(policy, {})
    )
    now = start_s
    in_flight: list[int] = []
    for step in range(30):
        eligible = subsets[step % len(subsets)]
        key = keys[step % len(keys)]
        picked = balancer.pick(eligible, key, now)
        if not eligible:
            assert picked is None
            continue
        assert picked in eligible
        balancer.request_started(picked)
        balancer.connection_opened(picked)
        in_flight.append(picked)
        now += rng.random()
        if in_flight and rng.random() < 0.5:
            done = in_flight.pop(rng.randrange(len(in_flight)))
            balancer.request_finished(done, rng.random() * 2, now)
            balancer.connection_closed(done)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(1, 30), min_size=2, max_size=10),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_dart_pair_is_two_distinct_eligible_members(
    weights: list[int], seed: int, data: st.DataObject
) -> None:
    from gateway.balancer.base import BackendStats
    from gateway.balancer.dart import WeightedDart

    stats = [BackendStats(f"h{i}", w) for i, w in enumerate(weights)]
    eligible = data.draw(
        st.lists(st.integers(0, len(weights) - 1), unique=True, min_size=2).map(sorted)
    )
    dart = WeightedDart(stats)
    rng = random.Random(seed)
    for _ in range(20):
        a, b = dart.draw_pair(eligible, rng)
        assert a != b and a in eligible and b in eligible
