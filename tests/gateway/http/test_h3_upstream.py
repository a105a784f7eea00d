"""The HTTP/3 upstream client's pure decisions: receive credit, stream room, what a GOAWAY
or a reset means for a stream, and the control-stream reader that spots a GOAWAY. The
frames are encoded with aioquic's own encoder (the peer's library)."""

from __future__ import annotations

from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import FrameType, encode_frame
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.h3_upstream import (
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    MAX_STREAMS_PER_CONNECTION,
    STREAM_REFUSED,
    STREAM_RESET,
    STREAM_UNHARMED,
    ControlStreamReader,
    goaway_fate,
    raised_credit,
    reset_fate,
    stream_room,
)

MIB = 1 << 20
CONTROL = encode_uint_var(0x00)
SETTINGS = encode_frame(FrameType.SETTINGS, encode_uint_var(0x6) + encode_uint_var(16384))


def test_credit_moves_only_with_what_was_consumed_in_half_window_steps() -> None:
    assert raised_credit(0, MIB, MIB) == MIB  # nothing taken: no more credit
    assert raised_credit(MIB // 2 - 1, MIB, MIB) == MIB  # less than half a window
    assert raised_credit(MIB // 2, MIB, MIB) == MIB + MIB // 2
    assert raised_credit(10 * MIB, MIB, 11 * MIB) == 11 * MIB
    assert raised_credit(0, MIB, 4 * MIB) == 4 * MIB  # never lowered


def test_stream_room_follows_the_peers_cumulative_max_streams_and_our_cap() -> None:
    assert stream_room(0, 0, 0, 0) == 0  # no MAX_STREAMS yet
    assert stream_room(0, 2, 0, 0) == 2
    assert stream_room(1, 2, 1, 0) == 1
    assert stream_room(1, 2, 1, 1) == 0  # the last slot is promised
    assert stream_room(5, 3, 0, 0) == 0  # opened past it: blocked until MAX_STREAMS grows
    assert stream_room(0, 1000, 0, 0) == MAX_STREAMS_PER_CONNECTION
    assert stream_room(10, 1000, MAX_STREAMS_PER_CONNECTION, 0) == 0


def test_goaway_refuses_its_stream_and_those_above() -> None:
    assert goaway_fate(8, 8) == STREAM_REFUSED  # RFC 9114 §5.2: the first not processed
    assert goaway_fate(12, 8) == STREAM_REFUSED
    assert goaway_fate(4, 8) == STREAM_UNHARMED


def test_only_a_rejected_stream_is_retry_safe() -> None:
    assert reset_fate(H3_REQUEST_REJECTED, response_complete=False) == STREAM_REFUSED
    assert reset_fate(H3_REQUEST_CANCELLED, response_complete=False) == STREAM_RESET
    assert reset_fate(H3_REQUEST_CANCELLED, response_complete=True) == STREAM_UNHARMED


def test_goaway_on_the_control_stream_is_spotted_after_other_frames() -> None:
    reader = ControlStreamReader()
    unknown = encode_frame(0x21, b"x" * 300)  # a reserved type: skipped, however long
    assert not reader.feed(CONTROL + SETTINGS + unknown)
    assert reader.feed(encode_frame(FrameType.GOAWAY, encode_uint_var(16)))
    assert reader.goaway_id == 16
    assert reader.feed(encode_frame(FrameType.GOAWAY, encode_uint_var(4)))  # lowered
    assert not reader.feed(encode_frame(FrameType.GOAWAY, encode_uint_var(12)))  # not raised
    assert reader.goaway_id == 4


def test_other_unidirectional_streams_are_ignored() -> None:
    reader = ControlStreamReader()
    qpack_encoder = encode_uint_var(0x02)
    assert not reader.feed(qpack_encoder + encode_frame(FrameType.GOAWAY, encode_uint_var(0)))
    assert reader.ignored and reader.goaway_id == -1


@given(
    goaway_id=st.integers(min_value=0, max_value=2**62 - 1),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_goaway_is_found_however_the_bytes_are_split(goaway_id: int, cuts: list[int]) -> None:
    data = (
        CONTROL
        + SETTINGS
        + encode_frame(0x21, b"y" * 200)
        + encode_frame(FrameType.GOAWAY, encode_uint_var(goaway_id))
    )
    reader = ControlStreamReader()
    found = False
    start = 0
    for cut in [*sorted(set(c for c in cuts if c < len(data))), len(data)]:
        found = reader.feed(data[start:cut]) or found
        start = cut
    assert found and reader.goaway_id == goaway_id
