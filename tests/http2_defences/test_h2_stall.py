"""Zero-window stall: a client that asks for a large response and never opens its flow-control
window. The ``stall`` listener has body_timeout_ms = 1000 (how long a stream may wait for
window), idle_timeout_ms = 1500, keep-alive PINGs every 1 s with a 1 s timeout. The stream is
reset (RST_STREAM CANCEL) within the body timeout, the connection is closed within the idle
or keep-alive budget, the worker buffers no more than the windows, and bystanders on the
same worker are served throughout.
"""

from __future__ import annotations

import socket
import time

import pytest
from defence_gateway import STALL_BODY_TIMEOUT_MS, DefenceGateway, MiB, under_attack
from h2_attack import CANCEL, RawH2, request_headers
from hyperframe.frame import PingFrame, SettingsFrame

RSS_BOUND = 16 * MiB  # observed: under 3 MiB over the baseline
BODY_TIMEOUT_S = STALL_BODY_TIMEOUT_MS / 1000
RESPONSE_BYTES = 64 * MiB  # over the RSS bound: buffering it would fail the test
# Stream reset: the body timeout, plus one backend round trip and scheduling slack.
RESET_BY_S = BODY_TIMEOUT_S + 1.5
# Connection closed: the reset, then the idle timeout (1.5 s) or the unanswered keep-alive
# PING (1 s interval + 1 s timeout), each checked on a 1 s tick.
CLOSED_BY_S = RESET_BY_S + 1.5 + 1.0 + 1.0


def _stalled_stream(a: RawH2, sid: int, started: float) -> float:
    seen = a.wait_for(lambda s: sid in s.resets, RESET_BY_S + 1)
    reset_after = time.monotonic() - started
    assert seen.resets.get(sid) == CANCEL, seen
    assert seen.statuses.get(sid) == 200  # the head went out; only the body was stalled
    assert BODY_TIMEOUT_S * 0.9 <= reset_after <= RESET_BY_S, f"reset after {reset_after:.2f}s"
    return reset_after


@pytest.mark.slow
def test_zero_window_stall_resets_the_stream_and_closes_the_connection(
    gw: DefenceGateway,
) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE = 0, never a WINDOW_UPDATE, never a PING answer."""
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["stall"], settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        started = time.monotonic()
        a.headers(1, request_headers(f"/bytes/{RESPONSE_BYTES}"), end=True)
        _stalled_stream(a, 1, started)
        assert a.seen.data.get(1, 0) == 0
        seen = a.wait_closed(CLOSED_BY_S)
        assert seen.closed and seen.closed_at is not None
        assert seen.closed_at - started <= CLOSED_BY_S, seen.closed_at - started
        assert seen.goaway is not None  # told before the close
        a.close()


@pytest.mark.slow
def test_zero_window_stall_that_keeps_pinging_is_still_closed_when_idle(
    gw: DefenceGateway,
) -> None:
    """The same stall from a client that answers the gateway's PINGs and sends its own every
    0.5 s (well under the PING flood threshold), as h2 stacks with keep-alive do: PINGs are
    not requests, so once its stream is reset the connection is idle and is closed."""
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(
            gw.ports["stall"],
            settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0},
            answer_pings=True,
        )
        started = time.monotonic()
        a.headers(1, request_headers(f"/bytes/{RESPONSE_BYTES}"), end=True)
        _stalled_stream(a, 1, started)
        while not a.seen.closed and time.monotonic() - started < CLOSED_BY_S + 1:
            a.send_frame(PingFrame(0, opaque_data=b"clientka"))
            a.wait_for(lambda s: s.closed, 0.5)
        seen = a.seen
        assert seen.closed, f"still open {time.monotonic() - started:.1f}s later: {seen}"
        assert seen.closed_at is not None and seen.closed_at - started <= CLOSED_BY_S
        assert seen.goaway is not None and seen.goaway[0] == 0  # NO_ERROR: an idle close
        a.close()


def test_connection_window_stall_resets_every_stream(gw: DefenceGateway) -> None:
    """Large stream windows but the connection window (65 535) is never reopened: four
    streams share those bytes, then all stall and are reset; no more than the window left."""
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["stall"], settings={SettingsFrame.INITIAL_WINDOW_SIZE: 4 * MiB})
        started = time.monotonic()
        sids = [1, 3, 5, 7]
        for sid in sids:
            a.headers(sid, request_headers(f"/bytes/{RESPONSE_BYTES}"), end=True)
        seen = a.wait_for(lambda s: all(sid in s.resets for sid in sids), RESET_BY_S + 2)
        assert {sid: seen.resets.get(sid) for sid in sids} == dict.fromkeys(sids, CANCEL)
        assert sum(seen.data.values()) <= 65_535
        assert time.monotonic() - started <= RESET_BY_S + 1
        a.close()


@pytest.mark.slow
def test_a_client_that_stops_reading_the_socket_is_closed(gw: DefenceGateway) -> None:
    """Windows wide open, but the client never reads: the gateway's writes block, and past
    the body timeout the connection is closed; what it sent is what the socket buffers held,
    not the 64 MiB response, and the worker kept none of it."""
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["stall"], settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        a.h2.increment_flow_control_window(2**31 - 1 - 65_535)
        a.headers(1, request_headers(f"/bytes/{RESPONSE_BYTES}"), end=True)
        time.sleep(RESET_BY_S + 1.5)  # not reading: the gateway must give up meanwhile
        started = time.monotonic()
        seen = a.wait_closed(5)
        assert seen.closed, "the gateway still holds a connection that stopped reading"
        assert time.monotonic() - started < 3, "the close came only once the client read"
        assert seen.data.get(1, 0) < RESPONSE_BYTES // 4, seen.data
        assert 1 not in seen.ended
        a.close()
