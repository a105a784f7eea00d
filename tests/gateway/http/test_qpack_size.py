"""The field-section sizer against pylsqpack's real encoder and decoder: for any header lists
an encoder with a dynamic table produces, the size measured before decoding is the size of
what pylsqpack then decodes (exact above the limit, never below the truth under it), and
the mirror of the encoder stream stays in step across insertions and evictions."""

from __future__ import annotations

import pylsqpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.qpack_size import FieldSectionSizer, QpackSizeError

_names = st.sampled_from(
    [b"user-agent", b"cookie", b"x-a", b"x-long-custom-header", b"accept", b"content-type"]
)
_values = st.binary(min_size=0, max_size=300).map(lambda b: bytes(0x61 + x % 26 for x in b))
_header_lists = st.lists(st.lists(st.tuples(_names, _values), max_size=12), max_size=25)


def _size(headers: list[tuple[bytes, bytes]]) -> int:
    return sum(len(n) + len(v) + 32 for n, v in headers)


@settings(max_examples=60, deadline=None)
@given(_header_lists, st.sampled_from([256, 1024, 4096]))
def test_measured_size_matches_what_pylsqpack_decodes(
    requests: list[list[tuple[bytes, bytes]]], capacity: int
) -> None:
    encoder, decoder = pylsqpack.Encoder(), pylsqpack.Decoder(capacity, 16)
    exact = FieldSectionSizer(capacity, limit=0)
    bounded = FieldSectionSizer(capacity, limit=1 << 30)
    stream = encoder.apply_settings(capacity, 16)
    for i, fields in enumerate(requests):
        headers = [(b":method", b"GET"), (b":path", b"/%d" % i), *fields]
        instructions, block = encoder.encode(i * 4, headers)
        stream += instructions
        decoder.feed_encoder(stream)
        exact.feed_encoder(stream)
        bounded.feed_encoder(stream)
        stream = b""
        control, decoded = decoder.feed_header(i * 4, block)
        encoder.feed_decoder(control)
        assert decoded == headers
        truth = _size(headers)
        exact.limit = truth - 1  # just over the limit: measured exactly, every field
        assert exact.section_size(block) == truth
        exact.limit = truth  # at the limit: not over it
        assert (exact.section_size(block) or 0) <= truth
        assert (bounded.section_size(block) or 0) >= truth  # under it: an upper bound
    assert exact.inserted == bounded.inserted


def test_a_section_referencing_a_missing_entry_is_blocked_then_measured() -> None:
    sizer = FieldSectionSizer(4096, limit=1000)
    # Required Insert Count 1 (encoded 2 with 4096: MaxEntries 128), Base 1, one
    # Indexed Field Line naming the newest dynamic entry 100 times.
    section = b"\x02\x00" + b"\x80" * 100
    assert sizer.section_size(section) is None
    sizer.feed_encoder(b"\x3f\xe1\x1f")  # Set Dynamic Table Capacity 4096
    sizer.feed_encoder(b"\x46x-bomb\x7f\xe9\x06" + b"b" * 1000)  # Insert, literal name
    assert sizer.inserted == 1
    measured = sizer.section_size(section)
    assert measured is not None and measured > 1000


def test_split_instructions_and_eviction_are_followed() -> None:
    sizer = FieldSectionSizer(200, limit=1 << 20)
    whole = b"\x3f\xa9\x01" + (b"\x41a\x7f\x17" + b"v" * 150) * 3  # capacity 200; 3 inserts
    for i in range(len(whole)):
        sizer.feed_encoder(whole[i : i + 1])
    assert sizer.inserted == 3
    assert sizer.dropped == 2  # each 183-byte entry evicts the one before
    with pytest.raises(QpackSizeError):
        sizer.section_size(b"\x03\x80\x80")  # RIC 2, Base 1: entry 0, evicted


def test_a_capacity_over_the_announced_one_is_refused() -> None:
    sizer = FieldSectionSizer(100, limit=1 << 20)
    with pytest.raises(QpackSizeError):
        sizer.feed_encoder(b"\x3f\xa9\x01")  # Set Dynamic Table Capacity 200
