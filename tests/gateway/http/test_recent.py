"""RecentSet's bounds: long values are never kept, a full set starts over."""

from __future__ import annotations

from gateway.http.recent import RecentSet


def test_remembers_short_values_and_never_long_ones() -> None:
    seen = RecentSet(max_items=4, max_len=5)
    seen.remember(b"short")
    seen.remember(b"toolong")
    assert seen.has(b"short")
    assert not seen.has(b"toolong")
    assert not seen.has(b"other")


def test_a_full_set_is_emptied_before_the_next_value() -> None:
    seen = RecentSet(max_items=3, max_len=8)
    for value in (b"a", b"b", b"c"):
        seen.remember(value)
    assert all(seen.has(v) for v in (b"a", b"b", b"c"))
    seen.remember(b"d")
    assert seen.has(b"d")
    assert not any(seen.has(v) for v in (b"a", b"b", b"c"))
