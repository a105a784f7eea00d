"""A server-side aioquic QuicConnection with the three things aioquic does not do itself.

Owns, by subclassing aioquic's sans-IO connection (its private hooks, pinned by the version
bounds in pyproject.toml):
- **flow control by consumption**: aioquic raises MAX_STREAM_DATA and MAX_DATA as soon as
  bytes *arrive* (it doubles each limit once half is used), so a client may push without
  bound while the proxy core has not taken anything. Here a request stream's credit is
  ``delivered - held + stream_window`` and the connection's ``used - held_total +
  connection_window``, where ``held`` is what a front delivered to a body buffer and the
  core has not taken yet (``hold`` / ``release``): a slow upstream stops the client within
  one window per stream and one per connection. Bytes the H3 layer buffers unparsed
  (``park``: a request stream blocked on QPACK, a HEADERS frame still arriving) get no
  credit either. Unidirectional streams (control, QPACK) keep aioquic's own rule;
- **SNI**: aioquic serves one certificate and has no server-name callback; the TLS
  context's ClientHello handler is wrapped to read the server name first and switch to the
  certificate serving it (``gateway.http.server_names`` decides which), and the name is kept
  for the misdirected-request check;
- **which streams came in 0-RTT**: aioquic delivers early data like any other; the STREAM
  frames of 0-RTT packets are noted (``early_streams``) so the H3 front can refuse an
  unsafe request replayed from them (425);
- **the concurrency cap**: the initial MAX_STREAMS for bidirectional streams (aioquic's is a
  fixed 128);
- **connection IDs that name their owner**: aioquic draws every ID it issues from
  ``os.urandom`` and has no generator hook; ``cid_factory`` (gateway/quic_cid.py) replaces
  the first ID before anything is sent and every ID ``_replenish_connection_ids`` adds.
Must never do I/O or read the clock: the listener passes ``now``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer, BufferReadError
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    Limit,
    QuicConnection,
    QuicConnectionId,
    stream_is_unidirectional,
)
from aioquic.quic.packet import QuicFrameType

from gateway.http.server_names import ServerNameTable
from workers.quic_tickets import SessionTickets

# Credit is raised only once it grew by this share of the window (fewer MAX_* frames).
_RAISE_FRACTION = 4


@dataclass(slots=True, frozen=True)
class QuicCertificate:
    certificate: Any
    chain: list[Any]
    private_key: Any


def load_certificate(cert_path: str, key_path: str) -> QuicCertificate:
    """One certificate chain and key as aioquic's TLS wants them; raises on bad files."""
    conf = QuicConfiguration(is_client=False)
    conf.load_cert_chain(cert_path, key_path)
    return QuicCertificate(conf.certificate, list(conf.certificate_chain), conf.private_key)


class CertificateChoice:
    """A listener's certificates; ``names`` maps an SNI to the index of the one serving it."""

    def __init__(self, certificates: Sequence[QuicCertificate], names: ServerNameTable) -> None:
        self.certificates = list(certificates)
        self.names = names


class _SniContext(tls.Context):
    """aioquic's TLS context, choosing the certificate from the ClientHello's server name."""

    choice: CertificateChoice | None = None
    seen_server_name: str | None = None

    def _server_handle_hello(  # type: ignore[no-untyped-def]
        self, input_buf, initial_buf, handshake_buf
    ):
        start = input_buf.tell()
        peek = Buffer(data=input_buf.data_slice(start, input_buf.capacity))
        try:
            hello = tls.pull_client_hello(peek)
        except (BufferReadError, ValueError, tls.AlertDecodeError):
            hello = None  # malformed: aioquic's own parse below raises the alert
        if hello is not None and hello.server_name:
            self.seen_server_name = hello.server_name
            choice = self.choice
            if choice is not None:
                index = choice.names.certificate_for(hello.server_name)
                if 0 < index < len(choice.certificates):
                    chosen = choice.certificates[index]
                    self.certificate = chosen.certificate
                    self.certificate_chain = chosen.chain
                    self.certificate_private_key = chosen.private_key
        return super()._server_handle_hello(input_buf, initial_buf, handshake_buf)


class GatewayQuicConnection(QuicConnection):
    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes | None = None,
        certificates: CertificateChoice | None,
        stream_window: int,
        connection_window: int,
        max_streams: int,
        cid_factory: Callable[[], bytes] | None = None,
        tickets: SessionTickets | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            session_ticket_fetcher=tickets.take if tickets is not None else None,
            session_ticket_handler=tickets.add if tickets is not None else None,
        )
        # client-initiated streams some of whose bytes came in 0-RTT packets (replayable)
        self.early_streams: set[int] = set()
        self._cid_factory = cid_factory
        if cid_factory is not None:  # nothing was sent yet: the first ID can still change
            first = self._host_cids[0]
            first.cid = cid_factory()
            self.host_cid = self._local_initial_source_connection_id = first.cid
        self._choice = certificates
        self.stream_window = stream_window
        self.connection_window = connection_window
        self._local_max_streams_bidi = Limit(
            frame_type=QuicFrameType.MAX_STREAMS_BIDI, name="max_streams_bidi", value=max_streams
        )
        # request stream id -> stream bytes delivered to the application / still held by it
        self.delivered: dict[int, int] = {}
        self.held: dict[int, int] = {}
        self.held_total = 0
        # request stream id -> bytes the H3 layer buffered and has not parsed (a stream
        # blocked on QPACK, a HEADERS frame still arriving): no credit for them either
        self.parked: dict[int, int] = {}

    def _replenish_connection_ids(self) -> None:
        factory = self._cid_factory
        if factory is None:
            super()._replenish_connection_ids()
            return
        while len(self._host_cids) < min(8, self._remote_active_connection_id_limit):
            self._host_cids.append(
                QuicConnectionId(
                    cid=factory(),
                    sequence_number=self._host_cid_seq,
                    stateless_reset_token=os.urandom(16),
                )
            )
            self._host_cid_seq += 1

    # ---- 0-RTT ----

    def _handle_stream_frame(self, context, frame_type, buf) -> None:  # type: ignore[no-untyped-def]
        if context.epoch == tls.Epoch.ZERO_RTT:
            start = buf.tell()
            self.early_streams.add(buf.pull_uint_var())
            buf.seek(start)
        super()._handle_stream_frame(context, frame_type, buf)

    # ---- SNI ----

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if not self._is_client:
            self.tls.__class__ = _SniContext
            self.tls.choice = self._choice  # type: ignore[attr-defined]

    @property
    def server_name(self) -> str | None:
        """The SNI of the client's ClientHello (None: none sent, or no handshake yet)."""
        return getattr(getattr(self, "tls", None), "seen_server_name", None)

    # ---- flow control by consumption ----

    def track(self, stream_id: int) -> None:
        """Credit ``stream_id`` by consumption from now on (a request stream a front took)."""
        self.delivered.setdefault(stream_id, 0)
        self.held.setdefault(stream_id, 0)

    def untrack(self, stream_id: int) -> None:
        self.early_streams.discard(stream_id)
        self.parked.pop(stream_id, None)
        self.held_total -= self.held.pop(stream_id, 0)
        self.delivered.pop(stream_id, None)

    def delivered_bytes(self, stream_id: int, n: int) -> None:
        """``n`` stream bytes of ``stream_id`` reached the application layer (H3 framing)."""
        if stream_id in self.delivered:
            self.delivered[stream_id] += n

    def park(self, stream_id: int, n: int) -> None:
        """``n`` bytes of ``stream_id`` wait in the H3 layer's buffer (replaces the last)."""
        if n and stream_id in self.delivered:
            self.parked[stream_id] = n
        else:
            self.parked.pop(stream_id, None)

    def hold(self, stream_id: int, n: int) -> None:
        if stream_id in self.held:
            self.held[stream_id] += n
            self.held_total += n

    def release(self, stream_id: int, n: int) -> None:
        if stream_id in self.held:
            n = min(n, self.held[stream_id])
            self.held[stream_id] -= n
            self.held_total -= n

    def _write_stream_limits(self, builder, space, stream) -> None:  # type: ignore[no-untyped-def]
        sid = stream.stream_id
        if self._is_client or stream_is_unidirectional(sid):
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
            return
        held = self.held.get(sid)
        if held is None:
            return  # not a stream we read (refused, reset, finished): no more credit
        target = self.delivered[sid] - held - self.parked.get(sid, 0) + self.stream_window
        if target - stream.max_stream_data_local >= self.stream_window // _RAISE_FRACTION:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder, space) -> None:  # type: ignore[no-untyped-def]
        max_data = self._local_max_data
        target = max_data.used - self.held_total + self.connection_window
        if target - max_data.value >= self.connection_window // _RAISE_FRACTION:
            max_data.value = target
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # aioquic's batching of MAX_STREAMS
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value
