"""The decoded size of a QPACK field section, known before the section is decoded.

Owns a mirror of the peer's QPACK encoder stream (RFC 9204 §4.3) that keeps only the name
length and size (name + value + 32, §3.2.1) of each dynamic-table entry, and the size of a
field section (RFC 9114 §4.2.2: the sum of name + value + 32 over its fields) computed from
its representations (§4.5) against that mirror and the static table. pylsqpack decodes a
whole section into a Python list with no size limit, so a few bytes that reference a 4 KiB
dynamic entry thousands of times would become gigabytes of header list: the caller refuses
a section whose size here exceeds SETTINGS_MAX_FIELD_SECTION_SIZE before pylsqpack sees it.
Must never decode a value it does not need the length of, nor hold more than sizes.
"""

from __future__ import annotations

import collections

import pylsqpack
from hpack.huffman_table import decode_huffman

_ENTRY_OVERHEAD = 32  # RFC 9204 §3.2.1
_STATIC_ENTRIES = 99  # RFC 9204 Appendix A
# An encoder instruction longer than this many times the table capacity (plus the slack)
# cannot be valid: its entry must fit in the table, and Huffman coding expands a byte to at
# most 30 bits (an encoder that uses it only when shorter never expands at all).
_INSTRUCTION_EXPANSION = 4
_INSTRUCTION_SLACK = 64


class QpackSizeError(Exception):
    """Input no conforming QPACK peer sends (the real decoder would fail it as well)."""


class _Incomplete(Exception):
    """An encoder instruction split across stream chunks."""


def _static_table() -> tuple[tuple[int, int], ...]:
    """(name length, entry size) of each static entry, read from pylsqpack's own table."""
    decoder = pylsqpack.Decoder(0, 0)
    out = []
    for index in range(_STATIC_ENTRIES):
        # Required Insert Count 0, Base 0, then "Indexed Field Line" with T=1 (static).
        line = bytes([0xC0 | index]) if index < 63 else bytes([0xFF, index - 63])
        _, headers = decoder.feed_header(index, b"\x00\x00" + line)
        ((name, value),) = headers
        out.append((len(name), len(name) + len(value) + _ENTRY_OVERHEAD))
    return tuple(out)


_STATIC = _static_table()
MAX_STATIC_SIZE = max(size for _, size in _STATIC)


def _int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """A prefixed integer (RFC 9204 §4.1.1, RFC 7541 §5.1) at ``pos``; (value, next pos)."""
    if pos >= len(data):
        raise _Incomplete
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise _Incomplete
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 62:
            raise QpackSizeError("integer too large")


def _string(data: bytes, pos: int, prefix_bits: int, exact: bool) -> tuple[int, int]:
    """A string literal (RFC 9204 §4.1.2) whose H bit sits just above the prefix: (its
    decoded length, next pos). Huffman-coded, the length is exact only with ``exact``
    (otherwise the bound of 8 bits per 5-bit shortest code)."""
    if pos >= len(data):
        raise _Incomplete
    huffman = data[pos] & (1 << prefix_bits)
    length, pos = _int(data, pos, prefix_bits)
    end = pos + length
    if end > len(data):
        raise _Incomplete
    if not huffman:
        return length, end
    if not exact:
        return length * 8 // 5, end
    try:
        return len(decode_huffman(data[pos:end])), end
    except Exception as exc:  # hpack raises its own HPACKDecodingError
        raise QpackSizeError("bad Huffman string") from exc


class FieldSectionSizer:
    """The peer encoder's dynamic table as sizes, and field sections measured against it."""

    def __init__(self, max_table_capacity: int, limit: int) -> None:
        # A section measured at most ``limit`` may be measured from above (Huffman lengths
        # bounded, not decoded); one over it is measured exactly.
        self.limit = limit
        self.max_capacity = max_table_capacity
        self.capacity = 0
        self.size = 0
        self.inserted = 0  # Total Number of Inserts
        self.dropped = 0  # the absolute index of the oldest entry still held
        self.entries: collections.deque[tuple[int, int]] = collections.deque()
        self._pending = b""

    # ---- the encoder stream ----

    def feed_encoder(self, data: bytes) -> None:
        """Encoder-stream bytes, in order, as they arrive (instructions may be split)."""
        buf = self._pending + data
        pos = 0
        try:
            while pos < len(buf):
                pos = self._instruction(buf, pos)
        except _Incomplete:
            pass
        self._pending = buf[pos:]
        if len(self._pending) > self.max_capacity * _INSTRUCTION_EXPANSION + _INSTRUCTION_SLACK:
            raise QpackSizeError("encoder instruction larger than the table")

    def _instruction(self, buf: bytes, pos: int) -> int:
        first = buf[pos]
        if first & 0x80:  # Insert with Name Reference: 1 T index(6), value
            index, p = _int(buf, pos, 6)
            if first & 0x40:
                name_len = _static_name(index)
            else:
                name_len = self._entry(self.inserted - 1 - index)[0]
            value_len, p = _string(buf, p, 7, exact=True)
            self._insert(name_len, value_len)
        elif first & 0x40:  # Insert with Literal Name: 01 H len(5), name, value
            name_len, p = _string(buf, pos, 5, exact=True)
            value_len, p = _string(buf, p, 7, exact=True)
            self._insert(name_len, value_len)
        elif first & 0x20:  # Set Dynamic Table Capacity: 001 capacity(5)
            capacity, p = _int(buf, pos, 5)
            if capacity > self.max_capacity:
                raise QpackSizeError("capacity over the announced maximum")
            self.capacity = capacity
            self._evict(0)
        else:  # Duplicate: 000 index(5)
            index, p = _int(buf, pos, 5)
            name_len, size = self._entry(self.inserted - 1 - index)
            self._insert(name_len, size - name_len - _ENTRY_OVERHEAD)
        return p

    def _insert(self, name_len: int, value_len: int) -> None:
        size = name_len + value_len + _ENTRY_OVERHEAD
        if size > self.capacity:
            raise QpackSizeError("entry larger than the table capacity")
        self._evict(size)
        self.entries.append((name_len, size))
        self.size += size
        self.inserted += 1

    def _evict(self, room: int) -> None:
        while self.entries and self.size + room > self.capacity:
            _, size = self.entries.popleft()
            self.size -= size
            self.dropped += 1

    def _entry(self, absolute: int) -> tuple[int, int]:
        if not self.dropped <= absolute < self.inserted:
            raise QpackSizeError("reference to an entry not in the table")
        return self.entries[absolute - self.dropped]

    # ---- field sections ----

    def section_size(self, data: bytes) -> int | None:
        """The decoded size of a whole field section (a HEADERS frame's payload): at most
        ``limit``, an upper bound of it (Huffman lengths bounded); over ``limit``, a size
        the section really exceeds (measured exactly, up to the first field past it). None
        when it references entries not inserted yet (a blocked stream: measure again once
        the encoder stream brought them)."""
        try:
            ric, pos = self._required_insert_count(data)
            if ric > self.inserted:
                return None
            sign = data[pos] & 0x80
            delta, pos = _int(data, pos, 7)
            base = ric - delta - 1 if sign else ric + delta
            bound = self._lines(data, pos, base, exact=False)
            if bound <= self.limit:
                return bound
            return self._lines(data, pos, base, exact=True)
        except (_Incomplete, IndexError) as exc:
            raise QpackSizeError("truncated field section") from exc

    def _required_insert_count(self, data: bytes) -> tuple[int, int]:
        """RFC 9204 §4.5.1.1."""
        encoded, pos = _int(data, 0, 8)
        if encoded == 0:
            return 0, pos
        max_entries = self.max_capacity // 32
        full_range = 2 * max_entries
        if encoded > full_range:
            raise QpackSizeError("bad Required Insert Count")
        max_value = self.inserted + max_entries
        ric = (max_value // full_range) * full_range + encoded - 1
        if ric > max_value:
            if ric <= full_range:
                raise QpackSizeError("bad Required Insert Count")
            ric -= full_range
        if ric == 0:
            raise QpackSizeError("bad Required Insert Count")
        return ric, pos

    def _lines(self, data: bytes, pos: int, base: int, *, exact: bool) -> int:
        total = 0
        end = len(data)
        while pos < end:
            first = data[pos]
            if first & 0x80:  # Indexed Field Line: 1 T index(6)
                index, pos = _int(data, pos, 6)
                if first & 0x40:
                    total += _static_size(index)
                else:
                    total += self._entry(base - 1 - index)[1]
            elif first & 0x40:  # Literal with Name Reference: 01 N T index(4), value
                index, pos = _int(data, pos, 4)
                static = first & 0x10
                name_len = _static_name(index) if static else self._entry(base - 1 - index)[0]
                value_len, pos = _string(data, pos, 7, exact)
                total += name_len + value_len + _ENTRY_OVERHEAD
            elif first & 0x20:  # Literal with Literal Name: 001 N H len(3), name, value
                name_len, pos = _string(data, pos, 3, exact)
                value_len, pos = _string(data, pos, 7, exact)
                total += name_len + value_len + _ENTRY_OVERHEAD
            elif first & 0x10:  # Indexed with Post-Base Index: 0001 index(4)
                index, pos = _int(data, pos, 4)
                total += self._entry(base + index)[1]
            else:  # Literal with Post-Base Name Reference: 0000 N index(3), value
                index, pos = _int(data, pos, 3)
                name_len = self._entry(base + index)[0]
                value_len, pos = _string(data, pos, 7, exact)
                total += name_len + value_len + _ENTRY_OVERHEAD
            if exact and total > self.limit:
                return total  # over: how far over does not matter
        return total


def _static_name(index: int) -> int:
    if index >= _STATIC_ENTRIES:
        raise QpackSizeError("static index out of range")
    return _STATIC[index][0]


def _static_size(index: int) -> int:
    if index >= _STATIC_ENTRIES:
        raise QpackSizeError("static index out of range")
    return _STATIC[index][1]
