"""QPACK written by hand for the tests that attack a QPACK decoder (RFC 9204 §4): integer
and string literals, encoder-stream instructions, a section prefix referencing the dynamic
table, and an aioquic encoder kept off the dynamic table so the encoder stream carries only
what a test writes on it. Used by the H3 front's attack tests (a client) and by the scripted
H3 backend (a server's QPACK bomb)."""

from __future__ import annotations

from typing import Any


class StaticOnlyEncoder:
    """pylsqpack's encoder kept off the dynamic table (the test writes that stream itself);
    the peer's acknowledgements of the test's own inserts are not its business."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        return bytes(self.inner.apply_settings(0, 0))

    def encode(self, stream_id: int, headers: Any) -> Any:
        return self.inner.encode(stream_id, headers)

    def feed_decoder(self, data: bytes) -> None:
        pass


def varint(value: int, prefix_bits: int, flags: int) -> bytes:
    """A QPACK prefixed integer (RFC 9204 §4.1.1, as HPACK's)."""
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes([flags | value])
    out = [flags | mask]
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def str_literal(data: bytes, prefix_bits: int = 7, flags: int = 0) -> bytes:
    """A string literal, no Huffman."""
    return varint(len(data), prefix_bits, flags) + data


def set_capacity(capacity: int) -> bytes:
    return varint(capacity, 5, 0x20)


def insert(name: bytes, value: bytes) -> bytes:
    """Insert with Literal Name (no Huffman)."""
    return str_literal(name, 5, 0x40) + str_literal(value)


def section_prefix(required_insert_count: int, max_capacity: int) -> bytes:
    """The prefix of a section with Base = Required Insert Count (RFC 9204 §4.5.1)."""
    if not required_insert_count:
        return b"\x00\x00"
    full_range = 2 * (max_capacity // 32)
    return varint(required_insert_count % full_range + 1, 8, 0) + b"\x00"


def indexed_lines(count: int) -> bytes:
    """``count`` Indexed Field Lines naming the newest dynamic entry (relative index 0)."""
    return b"\x80" * count
