"""The H3 front's QPACK decoder, bounded: pylsqpack's Decoder behind a size check.

Owns the decoder aioquic's H3 layer calls (``feed_encoder``, ``feed_header``,
``resume_header``, ``cancel_stream``): every field section is measured first
(gateway/http/qpack_size.FieldSectionSizer mirrors the peer's encoder stream) and one whose
decoded size would exceed SETTINGS_MAX_FIELD_SECTION_SIZE raises FieldSectionTooLarge
instead of being decoded, so a QPACK bomb never becomes a header list in memory.
pylsqpack itself enforces the table capacity and the blocked-stream limit we announced
(RFC 9204 §2.1.2, §3.2.3: its errors become QPACK_DECOMPRESSION_FAILED /
QPACK_ENCODER_STREAM_ERROR connection errors in aioquic). Must never touch a stream.
"""

from __future__ import annotations

import pylsqpack

from gateway.http.qpack_size import FieldSectionSizer, QpackSizeError


class FieldSectionTooLarge(Exception):
    def __init__(self, stream_id: int, size: int) -> None:
        super().__init__(f"field section of {size} bytes on stream {stream_id}")
        self.stream_id = stream_id
        self.size = size


class BoundedDecoder:
    """pylsqpack.Decoder's interface; a section over ``max_field_section_size`` is refused."""

    def __init__(
        self, max_table_capacity: int, blocked_streams: int, max_field_section_size: int
    ) -> None:
        self.inner = pylsqpack.Decoder(max_table_capacity, blocked_streams)
        self.sizer = FieldSectionSizer(max_table_capacity, max_field_section_size)
        self.limit = max_field_section_size
        # Sections of blocked streams, measured again once unblocked (at most
        # blocked_streams of them: pylsqpack refuses more).
        self.blocked: dict[int, bytes] = {}

    def feed_encoder(self, data: bytes) -> list[int]:
        unblocked = self.inner.feed_encoder(data)
        try:
            self.sizer.feed_encoder(data)
        except QpackSizeError as exc:
            raise pylsqpack.EncoderStreamError(str(exc)) from None
        return unblocked

    def _measure(self, stream_id: int, data: bytes) -> int | None:
        try:
            size = self.sizer.section_size(data)
        except QpackSizeError as exc:
            raise pylsqpack.DecompressionFailed(str(exc)) from None
        if size is not None and size > self.limit:
            raise FieldSectionTooLarge(stream_id, size)
        return size

    def feed_header(self, stream_id: int, data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        if self._measure(stream_id, data) is None:
            self.blocked[stream_id] = data
        return self.inner.feed_header(stream_id, data)

    def resume_header(self, stream_id: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        data = self.blocked.pop(stream_id, None)
        if data is not None:
            self._measure(stream_id, data)
        return self.inner.resume_header(stream_id)

    def cancel_stream(self, stream_id: int) -> bytes:
        """Forget the stream's section; the Stream Cancellation instruction to send."""
        self.blocked.pop(stream_id, None)
        return self.inner.cancel_stream(stream_id)
