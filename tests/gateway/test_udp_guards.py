"""The UDP proxy's pure guards: per-source session rate, reply byte budget, and the
resolution cache that keeps DNS (and its failures) off the datagram path."""

from __future__ import annotations

from gateway.reply_budget import DATAGRAM_OVERHEAD_BYTES, ReplyBudget
from gateway.resolve_cache import ResolveCache
from gateway.source_rate import SourceRate


def test_source_rate_allows_a_burst_then_the_rate() -> None:
    r = SourceRate(rate_per_s=10, burst=10)
    assert all(r.allow("192.0.2.1", 0.0) for _ in range(10))
    assert not r.allow("192.0.2.1", 0.0)
    assert r.allow("192.0.2.2", 0.0)  # another source has its own bucket
    assert r.allow("192.0.2.1", 0.1)  # one token a tenth of a second
    assert not r.allow("192.0.2.1", 0.1)
    assert r.limited_total == 2


def test_source_rate_table_is_bounded() -> None:
    r = SourceRate(rate_per_s=1, burst=1, max_sources=100)
    for i in range(10_000):
        r.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(r) == 100


def test_reply_budget_caps_amplification_on_the_wire() -> None:
    b = ReplyBudget(3)
    b.received(100)
    wire_in = 100 + DATAGRAM_OVERHEAD_BYTES
    sent = 0
    while b.try_send(50):
        sent += 50 + DATAGRAM_OVERHEAD_BYTES
    assert sent <= 3 * wire_in < sent + 50 + DATAGRAM_OVERHEAD_BYTES
    b.received(100)  # the client speaks again: the budget grows
    assert b.try_send(50)


def test_resolve_cache_keeps_failures_and_serves_stale_addresses() -> None:
    c: ResolveCache[int, str] = ResolveCache(ttl_s=30, failure_ttl_s=5)
    assert c.address(0, 0.0) is None
    assert c.wanted() == [0]
    assert c.address(0, 0.1) is None and c.wanted() == []  # one lookup in flight, not two
    c.failed(0, 1.0)
    assert c.failing(0, 2.0)
    assert c.address(0, 2.0) is None and c.wanted() == []  # failure cached: no new lookup
    assert c.address(0, 6.0) is None and c.wanted() == [0]  # until it expires
    c.resolved(0, "10.0.0.1", 6.5)
    assert c.address(0, 7.0) == "10.0.0.1" and c.wanted() == []
    assert c.address(0, 40.0) == "10.0.0.1" and c.wanted() == [0]  # stale, refreshing
    c.failed(0, 41.0)
    assert c.address(0, 42.0) == "10.0.0.1"  # a failed refresh keeps the last address
