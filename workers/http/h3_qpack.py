"""The H3 front's QPACK decoder, bounded: pylsqpack's Decoder behind a size check.

Owns the decoder aioquic's H3 layer calls (``feed_encoder``, ``feed_header``,
``resume_header``, ``cancel_stream``): every field section is measured first
(gateway/http/qpack_size.FieldSectionSizer mirrors the peer's encoder stream) and one whose
decoded size would exceed SETTINGS_MAX_FIELD_SECTION_SIZE raises FieldSectionTooLarge
instead of being decoded, so a QPACK bomb never becomes a header list in memory.
pylsqpack itself enforces the table capacity and the blocked-stream limit we announced
(RFC 9204 §2.1.2, §3.2.3: its errors become QPACK_DECOMPRESSION_FAILED /
QPACK_ENCODER_STREAM_ERROR connection errors in aioquic). ``BoundedFieldSections`` puts it
under an aioquic ``H3Connection`` of either role (the front's, the upstream client's): our
SETTINGS announce the limits, a HEADERS frame longer than the limit is refused before it is
buffered, and a refused stream's later bytes are dropped; the owner reads ``too_large`` and
ends those streams its own way (431 on the front, a 502 on the upstream side). Must never
send a response or fail a request.
"""

from __future__ import annotations

from typing import Any

import pylsqpack
from aioquic.h3.connection import FrameType, H3Stream, Setting

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


class BoundedFieldSections:
    """Mixed in before aioquic's ``H3Connection``: call ``bound_sections`` before
    ``H3Connection.__init__`` (which sends our SETTINGS: announce ``local_qpack_settings``
    from ``_get_local_settings``) and ``install_decoder`` right after it, before any peer
    byte (aioquic built its decoder with its own fixed values)."""

    section_limit: int
    table_capacity: int
    blocked_limit: int
    too_large: list[int]
    _dead: set[int]
    _decoder: Any  # H3Connection's, replaced by a BoundedDecoder

    def bound_sections(
        self, max_field_section_size: int, table_capacity: int, blocked_streams: int
    ) -> None:
        self.section_limit = max_field_section_size
        self.table_capacity = table_capacity
        self.blocked_limit = blocked_streams
        self.too_large = []  # streams whose section was refused, for the owner to end
        self._dead = set()  # streams whose later bytes are dropped

    def install_decoder(self) -> None:
        self._max_table_capacity = self.table_capacity
        self._blocked_streams = self.blocked_limit
        self._decoder = BoundedDecoder(self.table_capacity, self.blocked_limit, self.section_limit)

    def local_qpack_settings(self, settings: dict[int, int]) -> dict[int, int]:
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = self.table_capacity
        settings[Setting.QPACK_BLOCKED_STREAMS] = self.blocked_limit
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.section_limit
        return settings

    def _check_request_or_push_frame_type(self, frame_type: int, stream: H3Stream) -> None:
        super()._check_request_or_push_frame_type(frame_type, stream)  # type: ignore[misc]
        # A field line encodes in fewer bytes than the 32 its size adds (RFC 9204 §4.5,
        # RFC 9114 §4.2.2), so a frame this long decodes over the limit: refused before
        # aioquic buffers it whole.
        size = stream.frame_size or 0
        if frame_type == FrameType.HEADERS and size > self.section_limit + 32:
            raise FieldSectionTooLarge(stream.stream_id, size)

    def _receive_request_or_push_data(
        self, stream: H3Stream, data: bytes, stream_ended: bool
    ) -> list[Any]:
        sid = stream.stream_id
        if sid in self._dead:
            stream.buffer = b""
            if stream_ended:  # nothing more will come: aioquic may free it, we forget it
                stream.receiving_ended = True
                self._dead.discard(sid)
            return []
        try:
            events: list[Any] = super()._receive_request_or_push_data(  # type: ignore[misc]
                stream, data, stream_ended
            )
        except FieldSectionTooLarge:  # a HEADERS frame longer than the limit
            self._refuse_section(stream)
            return []
        return events

    def _handle_request_or_push_frame(
        self, frame_type: int, frame_data: bytes | None, stream: H3Stream, stream_ended: bool
    ) -> list[Any]:
        # Also reached from the encoder stream when a blocked section is resumed.
        if stream.stream_id in self._dead:
            return []
        try:
            events: list[Any] = super()._handle_request_or_push_frame(  # type: ignore[misc]
                frame_type, frame_data, stream, stream_ended
            )
        except FieldSectionTooLarge:  # a section that would decode over the limit
            self._refuse_section(stream)
            return []
        return events

    def _refuse_section(self, stream: H3Stream) -> None:
        sid = stream.stream_id
        self._dead.add(sid)
        self.too_large.append(sid)
        stream.buffer = b""
        stream.frame_size = stream.frame_type = None
        # Stream Cancellation (RFC 9204 §4.4.2): the section will never be decoded.
        cancellation = self._decoder.cancel_stream(sid)
        decoder_stream: int | None = getattr(self, "_local_decoder_stream_id", None)
        if decoder_stream is not None and cancellation:
            self._quic.send_stream_data(decoder_stream, cancellation)  # type: ignore[attr-defined]
