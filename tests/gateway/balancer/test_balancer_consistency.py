"""Hash policies: stable per key, and about 1/N of keys move when a backend is added or removed."""

from __future__ import annotations

import random

import pytest

from gateway.balancer import Balancer

HASH_POLICIES = ("maglev", "ring_hash", "session_affinity")
N = 10
_rng = random.Random(42)
KEYS = [_rng.randbytes(12) for _ in range(10_000)]


def _ids(n: int) -> list[tuple[str, int]]:
    return [(f"192.0.2.{i + 1}:443", 1) for i in range(n)]


def _assign(balancer: Balancer, eligible: list[int]) -> list[str]:
    out = []
    for key in KEYS:
        picked = balancer.pick(eligible, key, 0.0)
        assert picked is not None
        out.append(balancer.stats[picked].backend_id)
    return out


def _moved(a: list[str], b: list[str]) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y) / len(a)


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_adding_a_backend_moves_about_one_nth(policy: str) -> None:
    balancer = Balancer(policy, _ids(N + 1), random.Random(0))
    before = _assign(balancer, list(range(N)))
    after = _assign(balancer, list(range(N + 1)))
    moved = _moved(before, after)
    ideal = 1 / (N + 1)
    assert 0.5 * ideal < moved < 1.5 * ideal, (
        f"{policy}: {moved:.3f} of keys moved on add, ideal {ideal:.3f}, bound (0.5/N, 1.5/N)"
    )
    new_id = balancer.stats[N].backend_id
    to_new = sum(1 for x, y in zip(before, after, strict=True) if x != y and y == new_id)
    assert to_new / len(KEYS) >= 0.9 * moved, f"{policy}: moved keys should go to the new backend"


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_removing_a_backend_moves_about_one_nth(policy: str) -> None:
    balancer = Balancer(policy, _ids(N), random.Random(0))
    before = _assign(balancer, list(range(N)))
    after = _assign(balancer, [i for i in range(N) if i != 3])
    moved = _moved(before, after)
    ideal = 1 / N
    assert 0.5 * ideal < moved < 1.5 * ideal, (
        f"{policy}: {moved:.3f} of keys moved on remove, ideal {ideal:.3f}, bound (0.5/N, 1.5/N)"
    )
    removed = balancer.stats[3].backend_id
    bystanders = sum(1 for x, y in zip(before, after, strict=True) if x != y and x != removed)
    bound = 0.02 if policy == "maglev" else 0.0
    assert bystanders / len(KEYS) <= bound, (
        f"{policy}: {bystanders} keys of surviving backends moved (allowed {bound:.0%})"
    )


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_same_key_same_backend_across_workers_and_list_order(policy: str) -> None:
    backends = _ids(N)
    shuffled = backends[:]
    random.Random(5).shuffle(shuffled)
    a = Balancer(policy, backends, random.Random(1))
    b = Balancer(policy, shuffled, random.Random(2))
    assert _assign(a, list(range(N)))[:2000] == _assign(b, list(range(N)))[:2000]
    key = b"user-17"
    first = a.pick(list(range(N)), key, 0.0)
    assert all(a.pick(list(range(N)), key, float(t)) == first for t in range(50))


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_no_key_falls_back_to_weighted_random(policy: str) -> None:
    balancer = Balancer(policy, _ids(4), random.Random(3))
    assert len({balancer.pick([0, 1, 2, 3], None, 0.0) for _ in range(200)}) == 4


@pytest.mark.parametrize("policy", ["maglev", "ring_hash"])
def test_tables_rebuilt_only_when_the_eligible_set_changes(policy: str) -> None:
    options = {"table_size": 1009} if policy == "maglev" else {}
    balancer = Balancer(policy, _ids(5), random.Random(4), **options)
    policy_obj = balancer.policy
    attr = "table_builds" if policy == "maglev" else "ring_builds"
    for _ in range(100):
        balancer.pick([0, 1, 2, 3, 4], b"k", 0.0)
    assert getattr(policy_obj, attr) == 1
    for _ in range(10):  # flapping between two sets reuses cached tables
        balancer.pick([0, 1, 2, 4], b"k", 0.0)
        balancer.pick((0, 1, 2, 3, 4), b"k", 0.0)
    assert getattr(policy_obj, attr) == 2


def test_maglev_rejects_a_non_prime_table() -> None:
    with pytest.raises(ValueError, match="prime"):
        Balancer("maglev", _ids(3), random.Random(0), table_size=1000)
