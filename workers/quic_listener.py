"""A `protocol = "quic"` listener: terminate QUIC v1 (aioquic) and serve HTTP/3 on it.

Owns the UDP endpoint of one listener in one worker: the read loop (datagrams → the
connection their destination connection ID names; a new Initial of at least 1200 bytes
opens a connection, other unknown packets are dropped; an unsupported version is answered
with Version Negotiation), the table of connection IDs (the ones aioquic issues and retires
are followed through its events), one QuicSession per connection — the sans-IO
GatewayQuicConnection (workers/quic_connection.py), its timer, its transmissions — and the
worker's accounting (the per-IP and in-flight caps of the connection gate, the listener's
connection counts, the live scopes cut at the drain deadline), address validation before
a connection is opened (a Retry, or a token checked: workers/quic_retry.py), and the
session tickets of 0-RTT when ``early_data`` is on (workers/quic_tickets.py; off, aioquic
gets no ticket handler: no ticket is issued, no resumption nor early data accepted). The
HTTP/3 application on each session is the front registered as ``"h3"`` in
workers/http/registry.FRONTS.

Every packet reaches the worker that owns its connection: the IDs this endpoint issues
name it (gateway/quic_cid.py: marker, the sk_reuseport key of this CPU's socket as the
Boot gives it, pid). With the kernel datapath, the sk_reuseport program reads the key from the
destination ID and puts the datagram on this CPU's socket whatever the client's address
(a NAT rebinding or a client moving between CPUs changes nothing). Without it, the kernel
hands a datagram to whichever worker's socket it chose (the receiving CPU's, by
SO_INCOMING_CPU). Either way, a datagram whose ID names another live worker is **handed
off** to it through that worker's abstract Unix datagram socket (one per worker and
listener, named by pid), prefixed with the client address; the owner processes it as if
read from the UDP socket and answers from its own copy of the shared socket (same local
address). With BPF that happens only between the workers of one CPU (a draining worker
and its replacement share the CPU's socket); without BPF also between CPUs. A handed off
datagram is never handed on. Initials are served where they land unless their ID names
another live worker (a retransmission after that worker answered). Cost: one extra
``sendto``/``recvfrom`` pair and a copy per misdelivered datagram (a few microseconds);
the reply path is unchanged. A worker logs ``quic_first_handoff`` at its first handoff
per listener (with BPF steering and no reload, none is ever logged).

Drain: the read loop of the shared socket is not part of accepting but stops when the
worker drains (its replacement, or the new generation, reads the same socket from then on
and hands the draining connections' datagrams over); the handoff socket is read until the
last connection ended, so the connections of a draining worker keep their packets for the
drain budget, and a draining worker takes no new connection. Sessions end with their
connections; the worker's drain deadline cancels what is left, and a connection cut that way
(or by the worker's end) still sends its CONNECTION_CLOSE: the endpoint's copy of the socket
is closed only after the read loops and every session have ended. Must never block the read
loop on one connection, hand a datagram on twice, nor parse HTTP.
"""

from __future__ import annotations

import functools
import math
import os
import socket as stdsocket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
import trio
from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN, ErrorCode
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnectionState
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    QuicEvent,
)
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from gateway.config.plan import ListenerTlsPlan
from gateway.http.server_names import ServerNameTable
from gateway.quic_cid import CID_LEN_BYTES, CidOwner, decode, mint, owner_of
from gateway.quic_retry_token import RetryMode
from workers.quic_connection import (
    CertificateChoice,
    GatewayQuicConnection,
    load_certificate,
)
from workers.quic_handoff import decode_handoff, encode_handoff, handoff_address
from workers.quic_retry import AddressValidation, Admit, Drop
from workers.quic_tickets import SessionTickets

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

log = structlog.get_logger("expressgateway.worker")

MAX_DATAGRAM_BYTES = 65_535
# Datagrams read from the socket before the tasks they wake get to run (one transmission,
# ACKs for all of it and one wakeup of a body reader per batch: an H3 upload's worker CPU
# fell 3x against one datagram per wakeup).
READ_BATCH = 64
SMALLEST_INITIAL_BYTES = 1200  # RFC 9000 §14.1: a client's Initial datagram is padded to this
DRAINING_REASON = "quic_draining"
OWNER_GONE_REASON = "quic_owner_gone"


class QuicSession:
    """One QUIC connection: its sans-IO state, timer and transmissions, and its events for the
    application (the H3 front pulls them with ``next_events``)."""

    def __init__(
        self, endpoint: QuicEndpoint, quic: GatewayQuicConnection, addr: tuple[object, ...]
    ) -> None:
        self.endpoint = endpoint
        self.quic = quic
        self.addr = addr
        self.client_ip = str(addr[0])
        self.cids: set[bytes] = set()
        self.terminated = False
        self._wake = trio.Event()  # the transport task: something to send, or the timer moved
        self._events = trio.Event()  # the application: events are waiting
        self._progress = trio.Event()  # datagrams arrived: ACKs may have freed send buffers

    @property
    def sni(self) -> str | None:
        return self.quic.server_name

    # -- the endpoint's read loop (never awaits) --

    def datagram(self, data: bytes, addr: tuple[object, ...], now: float) -> None:
        self.quic.receive_datagram(data, addr, now)
        self._events.set()
        self.kick()
        progress, self._progress = self._progress, trio.Event()
        progress.set()

    # -- the application's side --

    def kick(self) -> None:
        """Something was queued (frames, credit): transmit soon."""
        self._wake.set()

    async def wait_progress(self, timeout_s: float) -> bool:
        """Until the next datagram from the client (False: none within ``timeout_s``)."""
        with trio.move_on_after(timeout_s):
            await self._progress.wait()
            return True
        return False

    async def next_events(self) -> list[QuicEvent]:
        """The connection's next QUIC events; [] once it has terminated."""
        quic = self.quic
        while True:
            events: list[QuicEvent] = []
            while (event := quic.next_event()) is not None:
                if isinstance(event, ConnectionIdIssued):
                    self.endpoint.register(event.connection_id, self)
                elif isinstance(event, ConnectionIdRetired):
                    self.endpoint.unregister(event.connection_id, self)
                else:
                    events.append(event)
                    if isinstance(event, ConnectionTerminated):
                        self.terminated = True
            if events:
                return events
            if self.terminated:
                return []
            self._events = trio.Event()
            await self._events.wait()

    def close(self, error_code: int = ErrorCode.H3_NO_ERROR, reason: str = "") -> None:
        self.quic.close(error_code=error_code, reason_phrase=reason)
        self.kick()

    # -- the transport task --

    async def serve_transport(self) -> None:
        quic = self.quic
        while True:
            self._wake = trio.Event()  # before any await: a kick meanwhile is not lost
            now = trio.current_time()
            timer = quic.get_timer()
            if timer is not None and timer <= now:
                quic.handle_timer(now)
                self._events.set()
            self.transmit(now)
            if quic._state is QuicConnectionState.TERMINATED:
                self.terminated = True
                self._events.set()
                return
            timer = quic.get_timer()
            with trio.move_on_at(timer if timer is not None else math.inf):
                await self._wake.wait()

    def transmit(self, now: float) -> None:
        send = self.endpoint.send
        for data, addr in self.quic.datagrams_to_send(now):
            send(data, addr)


SessionHandler = Callable[[QuicSession], Awaitable[None]]


def quic_configuration(idle_timeout_s: float) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=list(H3_ALPN),
        connection_id_length=CID_LEN_BYTES,
        idle_timeout=idle_timeout_s,
    )


def certificate_choice(plan: ListenerTlsPlan) -> tuple[CertificateChoice, QuicConfiguration]:
    """The listener's certificates for aioquic (raises on bad files: the boot fails)."""
    loaded = [load_certificate(c.cert_path, c.key_path) for c in plan.certificates]
    names = ServerNameTable.from_names([c.server_names for c in plan.certificates])
    conf = QuicConfiguration(is_client=False)
    conf.certificate = loaded[0].certificate
    conf.certificate_chain = loaded[0].chain
    conf.private_key = loaded[0].private_key
    return CertificateChoice(loaded, names), conf


class QuicEndpoint:
    def __init__(
        self,
        runtime: ListenerRuntime,
        worker: Worker,
        serve_session: SessionHandler,
        *,
        stream_window: int,
        connection_window: int,
        max_streams: int,
        idle_timeout_s: float,
        retry: RetryMode = "above_rate",
        retry_new_connections_per_s: int = 200,
        early_data: bool = False,
    ) -> None:
        tls = runtime.plan.tls
        if tls is None:
            raise RuntimeError(f"quic listener {runtime.plan.name!r} has no TLS plan")
        self.runtime = runtime
        self.worker = worker
        self.serve_session = serve_session
        # Our own copy: the worker closes the listening socket at drain, we keep reading.
        self.raw = stdsocket.socket(fileno=os.dup(runtime.sock.fileno()))
        self.raw.setblocking(False)
        self.sock = trio.socket.from_stdlib_socket(self.raw)
        self.name = runtime.plan.name
        self.owner: CidOwner = owner_of(os.getpid(), worker.boot.worker_key)
        self.cid_factory = functools.partial(mint, self.owner, os.urandom)
        self.validation = AddressValidation(retry, retry_new_connections_per_s, self.cid_factory)
        self.handoff = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM)
        self.handoff.bind(handoff_address(self.owner.owner, self.name))
        self.handoff.setblocking(False)
        self.handed_off = 0  # datagrams this worker passed to their owner
        self.choice, certs = certificate_choice(tls)
        conf = quic_configuration(idle_timeout_s)
        conf.certificate = certs.certificate
        conf.certificate_chain = certs.certificate_chain
        conf.private_key = certs.private_key
        conf.max_stream_data = stream_window
        conf.max_data = connection_window
        self.configuration = conf
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.max_streams = max_streams
        self.sessions: dict[bytes, QuicSession] = {}
        self._serving = True
        self._running_sessions = 0
        self.tickets = SessionTickets() if early_data else None

    def register(self, cid: bytes, session: QuicSession) -> None:
        self.sessions[cid] = session
        session.cids.add(cid)

    def unregister(self, cid: bytes, session: QuicSession) -> None:
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
        session.cids.discard(cid)

    async def serve(self) -> None:
        """Read the shared socket until the worker drains, and datagrams handed over by
        other workers until the worker's connections end."""
        log.info(
            "quic_listener_started",
            listener=self.name,
            certificates=len(self.choice.certificates),
            owner=self.owner.owner,
            worker_key=self.owner.key,
        )
        try:
            with self.handoff:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.serve_handoff)
                    with trio.CancelScope() as reading:
                        nursery.start_soon(self._stop_reading_at_drain, reading)
                        await self.serve_reading()
        finally:
            self._serving = False
            self._close_socket_when_unused()

    def _close_socket_when_unused(self) -> None:
        # Our copy of the socket outlives the read loop while sessions run: when the worker
        # ends, the sessions' last words (CONNECTION_CLOSE) are sent from their own unwinding,
        # which may come after this task's.
        if not self._serving and not self._running_sessions:
            self.sock.close()

    async def _stop_reading_at_drain(self, reading: trio.CancelScope) -> None:
        await self.worker.draining.wait()
        reading.cancel()

    async def serve_handoff(self) -> None:
        sock = trio.socket.from_stdlib_socket(self.handoff)
        while True:
            message = await sock.recv(MAX_DATAGRAM_BYTES + 64)
            decoded = decode_handoff(message)
            if decoded is not None:
                self.datagram(decoded[1], decoded[0], handed_off=True)

    async def serve_reading(self) -> None:
        """Up to READ_BATCH datagrams per wakeup, read without a scheduling point between
        them: the connections' transport and application tasks then run once per batch (one
        transmission, ACKs for all of it, one wakeup of a body reader for many DATA frames)
        rather than once per datagram, where Python spent most of a bulk transfer."""
        raw = self.raw
        while True:
            await trio.lowlevel.wait_readable(raw)
            for _ in range(READ_BATCH):
                try:
                    data, addr = raw.recvfrom(MAX_DATAGRAM_BYTES)
                except BlockingIOError:
                    break
                except OSError:
                    continue  # ICMP errors surface here on some kernels: not ours to end on
                self.datagram(data, addr)

    def datagram(self, data: bytes, addr: tuple[object, ...], *, handed_off: bool = False) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LEN_BYTES)
        except ValueError:
            return
        conf = self.configuration
        if (
            header.version is not None
            and header.packet_type is not QuicPacketType.VERSION_NEGOTIATION
            and header.version not in conf.supported_versions
        ):
            self.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=conf.supported_versions,
                ),
                addr,
            )
            return
        dcid = header.destination_cid
        session = self.sessions.get(dcid)
        if session is None:
            initial = header.packet_type is QuicPacketType.INITIAL
            owner = None if handed_off else decode(dcid)
            if owner is not None and owner != self.owner and self._hand_off(owner, addr, data):
                return
            if not initial or len(data) < SMALLEST_INITIAL_BYTES:
                if owner is not None and owner != self.owner:
                    self.runtime.stats.reject(OWNER_GONE_REASON)
                return
            now = trio.current_time()
            if self.worker.draining.is_set():
                self.runtime.stats.reject(DRAINING_REASON)  # the new generation takes them
                return
            verdict = self.validation.check(header, addr, now)
            if isinstance(verdict, Drop):
                self.runtime.stats.reject(verdict.reason)
                return
            if not isinstance(verdict, Admit):
                self.send(verdict.datagram, addr)  # a Retry: no state kept
                return
            session = self._open(dcid, addr, verdict)
            if session is None:
                return
        session.datagram(data, addr, trio.current_time())

    def _hand_off(self, owner: CidOwner, addr: tuple[object, ...], data: bytes) -> bool:
        """Pass a datagram to the worker its ID names; False when no such worker listens."""
        try:
            self.handoff.sendto(encode_handoff(addr, data), handoff_address(owner.owner, self.name))
        except OSError:
            return False
        self.handed_off += 1
        if self.handed_off == 1:  # once per worker and listener: steering is not by ID here
            log.info("quic_first_handoff", listener=self.name, owner=owner.owner)
        return True

    def send(self, data: bytes, addr: tuple[object, ...]) -> None:
        """Non-blocking: a datagram the kernel cannot queue now is lost, as on the wire
        (QUIC's loss recovery resends)."""
        try:
            self.raw.sendto(data, addr)
        except OSError:
            pass

    def _open(self, dcid: bytes, addr: tuple[object, ...], admit: Admit) -> QuicSession | None:
        stats = self.runtime.stats
        client_ip = str(addr[0])
        reason = self.worker.gate.admit(client_ip)
        if reason is not None:
            stats.reject(reason)
            return None
        quic = GatewayQuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=admit.original_dcid,
            retry_source_connection_id=admit.retry_scid,
            certificates=self.choice if len(self.choice.certificates) > 1 else None,
            stream_window=self.stream_window,
            connection_window=self.connection_window,
            max_streams=self.max_streams,
            cid_factory=self.cid_factory,
            tickets=self.tickets,
        )
        self.validation.opened(trio.current_time())
        session = QuicSession(self, quic, addr)
        self.register(dcid, session)
        self.register(quic.host_cid, session)
        # Counted now, not when its task runs: a drain starting in between must see it.
        self.worker.session_opened()
        self.worker.connections.start_soon(self._run_session, session)
        return session

    async def _run_session(self, session: QuicSession) -> None:
        runtime = self.runtime
        runtime.stats.connection_opened()
        self._running_sessions += 1
        scope = trio.CancelScope()
        runtime.live_scopes.add(scope)
        try:
            with scope:  # cancelled at the listener's drain deadline
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(session.serve_transport)
                    await self.serve_session(session)
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # a bug in one connection must never take the worker down
            self.worker.error_log.error(
                "connection_failed",
                key=f"connection_failed:{runtime.plan.name}:{type(exc).__name__}",
                listener=runtime.plan.name,
                client=session.client_ip,
                error=repr(exc),
            )
        finally:
            if not session.terminated:
                # Cut (drain deadline) or failed: tell the client rather than go silent.
                session.quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="closing")
                session.transmit(trio.current_time())
            for cid in list(session.cids):
                self.unregister(cid, session)
            runtime.live_scopes.discard(scope)
            self.worker.gate.release(session.client_ip)
            runtime.stats.connection_closed()
            self.worker.session_closed()
            self._running_sessions -= 1
            self._close_socket_when_unused()
