"""The UDP session table (gateway/udp_sessions.py): LRU eviction and idle expiry, pure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.udp_sessions import SessionTable


def table(max_sessions: int = 3, idle_timeout_s: float = 10.0) -> SessionTable[str, str]:
    return SessionTable(max_sessions=max_sessions, idle_timeout_s=idle_timeout_s)


def test_full_table_evicts_the_least_recently_used() -> None:
    t = table(max_sessions=3)
    for i, key in enumerate("abc"):
        assert t.add(key, key.upper(), now=float(i)) == []
    assert t.get("a", now=3.0) == "A"  # a is now the most recent; b is the oldest
    assert t.add("d", "D", now=4.0) == [("b", "B")]
    assert t.keys() == ["c", "a", "d"]
    assert t.touch("c", now=5.0)
    assert t.add("e", "E", now=6.0) == [("a", "A")]
    assert len(t) == 3
    assert t.evictions_total == 2
    assert "b" not in t and t.get("b", now=7.0) is None


def test_a_reply_refreshes_like_a_request() -> None:
    t = table(max_sessions=2, idle_timeout_s=10.0)
    t.add("a", "A", now=0.0)
    t.add("b", "B", now=1.0)
    assert t.touch("a", now=9.0)  # a backend reply went back to a
    assert t.pop_expired(now=11.0) == [("b", "B")]  # b idle 10 s; a only 2 s
    assert t.next_expiry_at() == 19.0
    assert not t.touch("zz", now=12.0)


def test_idle_sessions_expire_in_order_and_only_them() -> None:
    t = table(max_sessions=10, idle_timeout_s=5.0)
    assert t.next_expiry_at() is None
    assert t.pop_expired(now=100.0) == []
    for i, key in enumerate("abcd"):
        t.add(key, key.upper(), now=float(i))
    assert t.next_expiry_at() == 5.0
    assert t.pop_expired(now=4.999) == []
    assert t.pop_expired(now=6.0) == [("a", "A"), ("b", "B")]
    assert t.keys() == ["c", "d"]
    assert t.expirations_total == 2
    assert t.idle_for_s("c", now=6.0) == 4.0
    assert t.idle_for_s("a", now=6.0) is None


def test_discard_only_removes_the_same_session() -> None:
    t: SessionTable[str, object] = SessionTable(max_sessions=4, idle_timeout_s=1.0)
    first, second = object(), object()
    t.add("k", first, now=0.0)
    assert t.discard("k", first)
    t.add("k", second, now=1.0)
    assert not t.discard("k", first)  # a stale task ending must not drop the new session
    assert t.get("k", now=1.0) is second
    assert t.discard("k")
    assert not t.discard("k")


def test_adding_an_existing_key_is_an_error() -> None:
    t = table()
    t.add("a", "A", now=0.0)
    with pytest.raises(KeyError):
        t.add("a", "A2", now=1.0)


@pytest.mark.parametrize(("max_sessions", "idle_s"), [(0, 1.0), (1, 0.0), (-1, 1.0)])
def test_bad_limits_are_refused(max_sessions: int, idle_s: float) -> None:
    with pytest.raises(ValueError):
        SessionTable(max_sessions=max_sessions, idle_timeout_s=idle_s)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "get", "touch", "discard", "expire"]),
        st.integers(0, 12),  # key
        st.floats(0.0, 3.0),  # time step
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(ops=_ops, max_sessions=st.integers(1, 6), idle_s=st.floats(0.5, 5.0))
def test_matches_a_model_and_never_exceeds_its_bound(
    ops: list[tuple[str, int, float]], max_sessions: int, idle_s: float
) -> None:
    t: SessionTable[int, int] = SessionTable(max_sessions=max_sessions, idle_timeout_s=idle_s)
    model: dict[int, float] = {}  # key -> last activity
    now = 0.0
    for op, key, step in ops:
        now += step
        if op == "add" and key not in model:
            evicted = t.add(key, key, now)
            expected_victims = []
            while len(model) >= max_sessions:
                victim = min(model, key=lambda k: model[k])
                expected_victims.append((victim, victim))
                del model[victim]
            assert evicted == expected_victims
            model[key] = now
        elif op in ("get", "touch"):
            found = t.get(key, now) if op == "get" else t.touch(key, now)
            assert (found is not None and found is not False) == (key in model)
            if key in model:
                del model[key]  # keep the model's dict order = activity order (ties in time)
                model[key] = now
        elif op == "discard":
            assert t.discard(key) == (key in model)
            model.pop(key, None)
        elif op == "expire":
            expired = {k for k, _ in t.pop_expired(now)}
            assert expired == {k for k, seen in model.items() if seen + idle_s <= now}
            for k in expired:
                del model[k]
        assert len(t) == len(model) <= max_sessions
        assert t.keys() == list(model)
        assert t.keys() == sorted(model, key=lambda k: model[k])


def test_evict_lru_frees_the_oldest_on_demand() -> None:
    t = table(max_sessions=5)
    assert t.evict_lru() is None
    for i, key in enumerate("abc"):
        t.add(key, key.upper(), now=float(i))
    t.touch("a", now=5.0)
    assert t.evict_lru() == ("b", "B")
    assert t.keys() == ["c", "a"]
    assert t.evictions_total == 1
