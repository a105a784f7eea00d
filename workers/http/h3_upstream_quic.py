"""The aioquic objects an upstream HTTP/3 connection drives, with credit we control.

Owns the two places where we change aioquic's behaviour. First, its client raises a stream's
MAX_STREAM_DATA and the connection's MAX_DATA by doubling them whenever the peer has sent
half, whatever the application took, so a fast backend and a slow client would fill our
memory. ``UpstreamQuic`` announces credit on request streams as ``consumed + window``
(``gateway/http/h3_upstream.raised_credit``), where consumed is what QUIC delivered less what
still waits unread: in our stream buffers (``unread``) and in aioquic's H3 frame buffer (a
HEADERS frame is buffered whole until complete). The H3 control and QPACK streams are read as
they arrive and keep aioquic's rule. Also the send-buffer figure an upload waits on.
Second, aioquic's H3 client checks a response's Content-Length against its DATA without
knowing the request: the answer to HEAD (and a 304) states a length and carries nothing
(RFC 9110 §8.6), and aioquic would close the whole connection over it. ``UpstreamH3`` leaves
that check to the connection, which knows the method and the status; it also bounds the
backend's field sections as the front bounds a client's (SETTINGS_MAX_FIELD_SECTION_SIZE =
the backend limits' ``max_header_bytes``, measured before decoding). Must never do I/O.
"""

from __future__ import annotations

from typing import Any

from aioquic.h3.connection import H3Connection
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.stream import QuicStream

from gateway.http.h3_upstream import (
    CONNECTION_WINDOW_BYTES,
    STREAM_WINDOW_BYTES,
    raised_credit,
)
from workers.http.h3_qpack import BoundedFieldSections

# Our QPACK decoder's dynamic table and blocked streams toward a backend (aioquic's values).
QPACK_TABLE_CAPACITY = 4096
QPACK_BLOCKED_STREAMS = 16

_MAX_STREAM_DATA_FRAME_CAPACITY = 1 + 8 + 8
_CONNECTION_LIMIT_FRAME_CAPACITY = 1 + 8


def _is_request_stream(stream_id: int) -> bool:
    return stream_id % 4 == 0  # client-initiated bidirectional (RFC 9000 §2.1)


class UpstreamQuic(QuicConnection):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unread: dict[int, int] = {}  # request stream -> bytes delivered, not yet taken
        self.unread_total = 0
        self.h3_streams: dict[int, Any] = {}  # the H3Connection's streams (frame buffers)

    def add_unread(self, stream_id: int, size: int) -> None:
        self.unread[stream_id] = self.unread.get(stream_id, 0) + size
        self.unread_total += size

    def take_unread(self, stream_id: int, size: int) -> None:
        left = self.unread.get(stream_id, 0) - size
        if left > 0:
            self.unread[stream_id] = left
        else:
            self.unread.pop(stream_id, None)
        self.unread_total -= size

    def send_backlog(self, stream_id: int) -> int:
        """Bytes of ``stream_id`` handed to QUIC and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def remote_max_streams_bidi(self) -> int:
        return int(self._remote_max_streams_bidi)

    def next_stream_index(self) -> int:
        return int(self._local_next_stream_id_bidi // 4)

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        # Called for every stream in every packet: the common cases leave first.
        if stream.receiver.is_finished:
            return  # the peer sent its FIN (or this is one of our send-only streams)
        stream_id = stream.stream_id
        if stream_id is None or not _is_request_stream(stream_id):
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
            return
        h3_stream = self.h3_streams.get(stream_id)
        held = self.unread.get(stream_id, 0) + (len(h3_stream.buffer) if h3_stream else 0)
        consumed = stream.receiver.starting_offset() - held
        limit = raised_credit(consumed, STREAM_WINDOW_BYTES, stream.max_stream_data_local)
        stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent != limit:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(limit)
            stream.max_stream_data_local_sent = limit

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        max_data = self._local_max_data
        max_data.value = raised_credit(
            max_data.used - self.unread_total, CONNECTION_WINDOW_BYTES, max_data.value
        )
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # aioquic's batching of MAX_STREAMS
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=_CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value


class UpstreamH3(BoundedFieldSections, H3Connection):  # type: ignore[misc]
    """aioquic's H3 client with its field sections bounded (workers/http/h3_qpack): a
    backend's response or trailer section that would decode over ``max_field_section_size``
    (a QPACK bomb) is refused before decoding and listed in ``too_large``."""

    def __init__(self, quic: QuicConnection, *, max_field_section_size: int) -> None:
        self.bound_sections(max_field_section_size, QPACK_TABLE_CAPACITY, QPACK_BLOCKED_STREAMS)
        super().__init__(quic)
        self.install_decoder()

    def _get_local_settings(self) -> dict[int, int]:
        return self.local_qpack_settings(super()._get_local_settings())

    def _check_content_length(self, stream: Any) -> None:
        """Checked by ``H3UpstreamConnection`` (it knows HEAD and 204/304)."""
