"""The lingering-close decision and its bounds, without sockets (time is a parameter)."""

from __future__ import annotations

from gateway.http.lingering_close import Linger, LingerLimits, should_linger


def test_lingers_only_while_the_client_may_still_send() -> None:
    assert should_linger(unread_input=True, peer_closed=False, upgraded=False)
    assert not should_linger(unread_input=False, peer_closed=False, upgraded=False)
    assert not should_linger(unread_input=True, peer_closed=True, upgraded=False)
    assert not should_linger(unread_input=True, peer_closed=False, upgraded=True)


def test_linger_ends_at_eof_idle_total_or_byte_budget() -> None:
    limits = LingerLimits(total_s=5.0, idle_s=1.0, max_bytes=100)
    linger = Linger(limits, now=10.0)
    assert linger.next_deadline() == 11.0  # idle first
    assert linger.on_read(40, now=10.5)
    assert linger.next_deadline() == 11.5  # each read moves the idle deadline
    assert not linger.on_read(0, now=10.6)  # EOF: the client closed its side
    linger = Linger(limits, now=10.0)
    assert linger.on_read(60, now=10.1) and not linger.on_read(41, now=10.2)  # 101 > 100 bytes
    linger = Linger(limits, now=10.0)
    for t in range(1, 6):
        assert linger.on_read(1, now=10.0 + t * 0.9)
    assert linger.next_deadline() == 15.0  # the total bounds a client that trickles
    assert not linger.on_read(1, now=15.0)
