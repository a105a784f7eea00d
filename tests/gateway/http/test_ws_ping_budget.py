"""The client ping budget of WebSocket tunnels (gateway/http/ws_frames), time injected."""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from gateway.http.ws_frames import FrameTracker, PingBudget


def test_tracker_counts_ping_frames_across_reads() -> None:
    client = Connection(ConnectionType.CLIENT)  # masked frames, as a client sends them
    wire = client.send(Ping(payload=b"a")) + client.send(TextMessage(data="x"))
    wire += client.send(Ping(payload=b"b" * 100))
    tracker = FrameTracker(max_message_bytes=1000)
    for i in range(len(wire)):  # one byte at a time: headers split across reads
        tracker.feed(wire[i : i + 1])
    assert tracker.pings == 2 and tracker.at_boundary


def test_budget_allows_the_limit_per_window_then_refuses() -> None:
    budget = PingBudget(max_pings=3, window_s=10.0)
    assert budget.admit(1, now=100.0)
    assert budget.admit(2, now=105.0)
    assert not budget.admit(1, now=109.9)  # the fourth within the window
    fresh = PingBudget(max_pings=3, window_s=10.0)
    assert fresh.admit(3, now=0.0)
    assert fresh.admit(3, now=10.0)  # a new window: the count starts again
    assert not fresh.admit(4, now=30.0)  # one read carrying more than the whole budget
