"""HTTP/2 flood defences against raw frames: each attack gets its stated reaction exactly at
its threshold (the original's defaults, [listeners.h2]), the worker's memory stays bounded,
and a well-behaved HTTP/2 client and an HTTP/1.1 client on the same worker keep being served.
"""

from __future__ import annotations

import time

from defence_gateway import NARROW_STREAMS, DefenceGateway, MiB, under_attack
from h2_attack import (
    ENHANCE_YOUR_CALM,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RawH2,
    request_headers,
)
from hyperframe.frame import PingFrame, PriorityFrame, SettingsFrame

# [listeners.h2] defaults (anchor-inventory §2.6/§3: 100 resets, 50 PINGs, 100 SETTINGS per 10 s).
MAX_RESETS = 100
MAX_PINGS = 50
MAX_SETTINGS = 100
MAX_EMPTY_DATA = 100
MAX_PRIORITY = 500
MAX_REFUSED = 100
RSS_BOUND = 16 * MiB  # observed: under 3 MiB over the baseline


def _still_open(attacker: RawH2, settle_s: float = 0.3) -> None:
    """No GOAWAY and no close yet: the connection is under its threshold."""
    seen = attacker.wait_for(lambda s: s.goaway is not None or s.closed, settle_s)
    assert seen.goaway is None and not seen.closed, f"closed below the threshold: {seen}"


def _calmed(attacker: RawH2, timeout_s: float = 3.0) -> None:
    """GOAWAY ENHANCE_YOUR_CALM, then the connection is closed."""
    seen = attacker.wait_for(lambda s: s.closed, timeout_s)
    assert seen.goaway is not None and seen.goaway[0] == ENHANCE_YOUR_CALM, seen.goaway
    assert seen.closed, "the gateway must close the connection after its GOAWAY"


def test_rapid_reset_past_threshold_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """CVE-2023-44487: HEADERS + RST_STREAM pairs. 100 are tolerated, the 101st is not;
    a blast of 4 000 pairs in one write is cut off just the same."""
    before = gw.rejections().get("rapid_reset", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        sid = 1
        for _ in range(MAX_RESETS):
            a.headers(sid, request_headers("/headers"), end=False)
            a.h2.reset_stream(sid)
            a.flush()
            sid += 2
        _still_open(a)
        a.headers(sid, request_headers("/headers"), end=False)
        a.h2.reset_stream(sid)
        a.flush()
        _calmed(a)
        assert a.seen.goaway is not None and a.seen.goaway[1] <= sid
        a.close()

        blast = RawH2(gw.ports["main"])
        for sid in range(1, 8_001, 2):
            blast.h2.send_headers(sid, request_headers("/headers"), end_stream=False)
            blast.h2.reset_stream(sid)
        blast.flush()
        _calmed(blast)
        blast.close()
    assert gw.wait_rejection("rapid_reset", before + 2) == before + 2


def test_ping_flood_past_threshold_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """50 PINGs within the window are answered; the 51st ends the connection."""
    before = gw.rejections().get("ping_flood", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        for i in range(MAX_PINGS):
            a.send_frame(PingFrame(0, opaque_data=b"%08d" % i))
        seen = a.wait_for(lambda s: s.ping_acks >= MAX_PINGS, 3)
        assert seen.ping_acks == MAX_PINGS
        _still_open(a)
        a.send_frame(PingFrame(0, opaque_data=b"00000051"))
        _calmed(a)
        a.close()
        # A flood in one write: at most one read's worth is answered before the GOAWAY.
        blast = RawH2(gw.ports["main"])
        blast.send(
            b"".join(PingFrame(0, opaque_data=b"blastblt").serialize() for _ in range(50_000))
        )
        _calmed(blast, timeout_s=5)
        assert blast.seen.ping_acks < 5_000, blast.seen.ping_acks
        blast.close()
    assert gw.wait_rejection("ping_flood", before + 2) == before + 2


def test_settings_flood_past_threshold_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """100 SETTINGS frames (the preface's included) are acknowledged; the 101st is not."""
    before = gw.rejections().get("settings_flood", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])  # its preface carries SETTINGS number 1
        for _ in range(MAX_SETTINGS - 1):
            a.send_frame(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65_535}))
        _still_open(a)
        a.send_frame(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65_535}))
        _calmed(a)
        a.close()
    assert gw.wait_rejection("settings_flood", before + 1) == before + 1


def test_empty_data_flood_past_threshold_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """Zero-length DATA frames without END_STREAM on an open upload: 100 pass, the 101st not."""
    before = gw.rejections().get("empty_data_flood", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        a.headers(1, request_headers("/sha", "POST"), end=False)
        for _ in range(MAX_EMPTY_DATA):
            a.send_frame(a.data_frame(1, b""))
        _still_open(a)
        a.send_frame(a.data_frame(1, b""))
        _calmed(a)
        a.close()
    assert gw.wait_rejection("empty_data_flood", before + 1) == before + 1


def test_priority_flood_past_threshold_gets_goaway_enhance_your_calm(gw: DefenceGateway) -> None:
    """PRIORITY frames for distinct idle streams: 500 pass, the 501st ends the connection."""
    before = gw.rejections().get("priority_flood", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["main"])
        frames = [
            PriorityFrame(sid, depends_on=0, stream_weight=16).serialize()
            for sid in range(1, 2 * MAX_PRIORITY, 2)
        ]
        a.send(b"".join(frames))
        _still_open(a)
        a.send_frame(PriorityFrame(2 * MAX_PRIORITY + 1, depends_on=0, stream_weight=16))
        _calmed(a)
        a.close()
    assert gw.wait_rejection("priority_flood", before + 1) == before + 1


def test_streams_over_the_limit_are_refused_then_a_refusal_flood_is_calmed(
    gw: DefenceGateway,
) -> None:
    """With max_concurrent_streams = 4, a fifth stream in flight gets RST_STREAM
    REFUSED_STREAM while the four go on; 100 refusals pass, the 101st ends the connection."""
    before = gw.rejections().get("refused_flood", 0.0)
    with under_attack(gw, rss_growth_bytes=RSS_BOUND):
        a = RawH2(gw.ports["narrow"])
        seen = a.wait_for(lambda s: bool(s.settings), 3)
        assert seen.settings[0].get(SettingsFrame.MAX_CONCURRENT_STREAMS) == NARROW_STREAMS
        held = [1 + 2 * i for i in range(NARROW_STREAMS)]
        for sid in held:  # uploads left open: each stays in flight
            a.headers(sid, request_headers("/echo", "POST"), end=False)
            a.h2.send_data(sid, b"x")
            a.flush()
        time.sleep(0.2)
        over = held[-1] + 2
        a.headers(over, request_headers("/headers"), end=True)
        seen = a.wait_for(lambda s: over in s.resets, 3)
        assert seen.resets.get(over) == REFUSED_STREAM
        assert not any(sid in seen.resets for sid in held), seen.resets
        sid = over
        for _ in range(MAX_REFUSED - 1):  # refusals #2..#100
            sid += 2
            a.headers(sid, request_headers("/headers"), end=True)
        seen = a.wait_for(lambda s: len(s.resets) >= MAX_REFUSED, 3)
        assert list(seen.resets.values()) == [REFUSED_STREAM] * MAX_REFUSED
        _still_open(a)
        # The streams in flight are still served; the slot one frees is taken again.
        a.h2.send_data(held[0], b"y", end_stream=True)
        a.flush()
        seen = a.wait_for(lambda s: held[0] in s.ended, 5)
        assert seen.statuses.get(held[0]) == 200 and seen.data.get(held[0]) == 2
        a.headers(sid + 2, request_headers("/echo", "POST"), end=False)
        _still_open(a)
        assert sid + 2 not in a.seen.resets
        a.headers(sid + 4, request_headers("/headers"), end=True)  # refusal #101
        _calmed(a)
        a.close()
    assert gw.wait_rejection("refused_flood", before + 1) == before + 1


def test_goaway_codes_are_the_rfc_ones() -> None:
    """The constants the tests assert are RFC 9113 §7's (a typo would let a test pass)."""
    assert (PROTOCOL_ERROR, REFUSED_STREAM, ENHANCE_YOUR_CALM) == (0x1, 0x7, 0xB)


def test_a_client_that_keeps_exactly_the_limit_in_flight_is_never_refused(
    gw: DefenceGateway,
) -> None:
    """A compliant client (h2load -m N) opens a stream the moment one of its N ends: a stream
    whose END_STREAM went out no longer counts (RFC 9113 §5.1.2), so nothing is refused and
    the refusal-flood guard never fires on it."""
    a = RawH2(gw.ports["narrow"])
    total, next_sid, open_sids = 100, 1, set()
    deadline = time.monotonic() + 20
    while (next_sid < 2 * total or open_sids) and time.monotonic() < deadline:
        while len(open_sids) < NARROW_STREAMS and next_sid < 2 * total:
            a.headers(next_sid, request_headers("/headers"), end=True)
            open_sids.add(next_sid)
            next_sid += 2
        a.pump(0.5)
        assert not a.seen.resets and a.seen.goaway is None, (a.seen.resets, a.seen.goaway)
        open_sids -= a.seen.ended
    assert len(a.seen.ended) == total and set(a.seen.statuses.values()) == {200}
    a.close()


def test_frames_on_a_reset_stream_do_not_draw_unbounded_resets(gw: DefenceGateway) -> None:
    """One stream opened and reset (one rapid-reset count), then 2 000 empty DATA frames on
    it: h2 answers each with RST_STREAM STREAM_CLOSED and reports no event, so the front
    counts them itself (as resets: the original bounds such local resets at 100) and ends
    the connection with ENHANCE_YOUR_CALM."""
    a = RawH2(gw.ports["main"])
    a.headers(1, request_headers("/headers"), end=False)
    a.h2.reset_stream(1)
    a.flush()
    a.send(a.data_frame(1, b"").serialize() * 2_000)
    seen = a.wait_for(lambda s: s.closed, 2)
    a.close()
    assert seen.goaway is not None and seen.goaway[0] == ENHANCE_YOUR_CALM, (
        f"no GOAWAY; the gateway answered with {a.rst_count} RST_STREAM frames"
    )
    assert a.rst_count <= 2_000  # one read's worth at most before the verdict
