"""The datagram proxy of a `protocol = "udp"` listener: one session per client address.

A datagram from a client address without a session opens one: the listener's policy
picks a backend (hash policies key on the client IP, or on the QUIC destination
connection ID with `hash_key = "quic_cid"`), a connected UDP socket towards it
carries the client's datagrams, and one task per session relays the backend's
replies with `sendto` from (a duplicate of) the listening socket, so replies come
from the address the client sent to. The table (gateway/udp_sessions.py) is bounded
by `max_sessions` — the least recently used session is evicted — and sessions idle
for `session_idle_timeout_ms` end.

Guards (issue 17): a source address may open `new_sessions_per_source_per_s` sessions a
second (per worker); a session relays at most `reply_amplification_factor` times the
bytes its client sent (gateway/reply_budget.py); backend names are resolved by a task of
their own (gateway/resolve_cache.py) — the read loop never waits for DNS, and a failed
lookup is remembered, so a dead name costs one lookup per interval, not one per datagram.
`workers/quic_passthrough.py` reuses this machinery with QUIC routing.

On drain the read loop stops (the replacement worker reads the same shared socket),
but open sessions keep relaying replies until they go idle or the drain deadline
cuts them. Must never: block the read loop on one session's backend, let the table
grow past its bound, or swallow trio.Cancelled.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as stdsocket
import time
from typing import TYPE_CHECKING

import structlog
import trio

from gateway.balancer import HashKeyKind
from gateway.config.schema import UdpConfig
from gateway.reply_budget import ReplyBudget
from gateway.resolve_cache import ResolveCache
from gateway.source_rate import SourceRate
from gateway.steering import quic_dcid
from gateway.udp_sessions import SessionTable

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

log = structlog.get_logger("expressgateway.worker")

MAX_DATAGRAM_BYTES = 65_535
# A short-header QUIC packet does not carry its DCID length; 8 bytes is what aioquic,
# quiche and most servers issue. Only used for `hash_key = "quic_cid"`.
QUIC_SHORT_DCID_LEN_BYTES = 8
RESOLVE_TTL_S = 30.0
RESOLVE_FAILURE_TTL_S = 5.0
RESOLVE_TIMEOUT_S = 5.0
FORWARD_BUDGET_S = 2.0
EVICTED_REASON = "udp_session_evicted"
SOCKET_LIMIT_REASON = "udp_socket_limit"
SOURCE_RATE_REASON = "udp_source_rate"
REPLY_BUDGET_REASON = "udp_reply_budget"
_FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ClientKey = tuple[str, int]
SessionKey = tuple[object, ...]  # udp: the client address; quic_passthrough: + backend
SockAddr = tuple[int, tuple[object, ...]]  # (family, sockaddr)


class _Session:
    __slots__ = (
        "backend",
        "budget",
        "client_addr",
        "first_reply_s",
        "key",
        "scope",
        "shared_at_s",
        "shared_key",
        "sock",
        "started_s",
    )

    def __init__(
        self,
        key: SessionKey,
        backend: int,
        client_addr: tuple[object, ...],
        sock: trio.socket.SocketType,
        budget: ReplyBudget | None,
    ) -> None:
        self.key = key
        self.backend = backend
        self.client_addr = client_addr  # as recvfrom gave it (IPv6 carries flow info, scope)
        self.sock = sock
        self.budget = budget
        self.scope = trio.CancelScope()
        self.started_s = trio.current_time()
        self.first_reply_s: float | None = None
        # quic_passthrough: this session's entry in the shared flow table, last written at
        self.shared_key: bytes | None = None
        self.shared_at_s = 0.0


def _literal_address(host: str, port: int) -> SockAddr | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6:
        return int(stdsocket.AF_INET6), (host, port, 0, 0)
    return int(stdsocket.AF_INET), (host, port)


class UdpListener:
    """The sessions of one udp listener in one worker."""

    def __init__(self, runtime: ListenerRuntime, worker: Worker) -> None:
        self.runtime = runtime
        self.worker = worker
        udp = runtime.plan.udp or UdpConfig()
        self.table: SessionTable[SessionKey, _Session] = SessionTable(
            max_sessions=udp.max_sessions, idle_timeout_s=udp.session_idle_timeout_ms / 1000
        )
        rate = udp.new_sessions_per_source_per_s or 0
        self.session_rate = SourceRate(rate_per_s=rate, burst=rate) if rate else None
        self.amplification_factor = udp.reply_amplification_factor or 0
        # The worker closes its copy of the listening socket when accepting stops; replies
        # of the sessions that drain on go out through this duplicate (same local address).
        self.reply_sock = runtime.sock.dup()
        backends = runtime.upstreams.backends
        self._literal = {
            i: a for i, b in enumerate(backends) if (a := _literal_address(b.host, b.port))
        }
        self.addresses: ResolveCache[int, SockAddr] = ResolveCache(
            ttl_s=RESOLVE_TTL_S, failure_ttl_s=RESOLVE_FAILURE_TTL_S
        )
        self._resolve_wanted = trio.Event()
        self._added = trio.Event()

    async def serve_datagrams(self) -> None:
        sock = self.runtime.sock
        while True:
            try:
                data, addr = await sock.recvfrom(MAX_DATAGRAM_BYTES)
            except ConnectionRefusedError:
                continue  # an ICMP error for an earlier reply to a client that went away
            # A datagram already read is forwarded even if the drain cancels this loop
            # meanwhile (nobody else will ever see it); the budget bounds a slow resolve.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FORWARD_BUDGET_S):
                await self._forward(data, addr)

    async def _forward(self, data: bytes, addr: tuple[object, ...]) -> None:
        key: ClientKey = (addr[0], addr[1])  # type: ignore[assignment]
        session = self.table.get(key, trio.current_time())
        if session is None:
            if self.session_rate is not None and not self.session_rate.allow(
                key[0], time.monotonic()
            ):
                self.runtime.stats.reject(SOURCE_RATE_REASON)
                return
            up = self.runtime.upstreams
            cid = None
            if up.hash_key is not None and up.hash_key.kind is HashKeyKind.QUIC_CID:
                cid = quic_dcid(data, QUIC_SHORT_DCID_LEN_BYTES)
            i = up.choose(key=up.key_for(client_ip=key[0], quic_cid=cid))
            if i is None:
                self.runtime.stats.no_backend()
                return
            session = await self._open(key, addr, i)
            if session is None:
                return
        await self._send(session, data)

    async def _send(self, session: _Session, data: bytes) -> None:
        """One client datagram to the session's backend."""
        if session.budget is not None:
            session.budget.received(len(data))
        try:
            await session.sock.send(data)
        except trio.ClosedResourceError:
            return  # the session expired while this datagram waited for buffer space
        except ConnectionRefusedError:
            # A queued ICMP port-unreachable from an earlier datagram: the backend is gone.
            self._refused(session)
            return
        except OSError as exc:
            self.runtime.stats.upstream_error(self._backend_id(session), _send_kind(exc))
            return
        self.runtime.stats.bytes_in(len(data))

    def _address(self, i: int) -> SockAddr | None:
        """Backend i's address now, without waiting: IP literals at once, names from the
        cache (a miss or a recent failure answers None and asks the resolver task)."""
        literal = self._literal.get(i)
        if literal is not None:
            return literal
        found = self.addresses.address(i, trio.current_time())
        self._resolve_wanted.set()
        return found

    async def _open(self, key: SessionKey, addr: tuple[object, ...], i: int) -> _Session | None:
        up = self.runtime.upstreams
        stats = self.runtime.stats
        resolved = self._address(i)
        if resolved is None:
            if self.addresses.failing(i, trio.current_time()):
                up.record(i, ok=False, kind="resolve")
            stats.upstream_error(up.backends[i].id, "resolve")
            return None
        family, sockaddr = resolved
        try:
            sock = self._new_socket(family)
        except OSError:
            stats.upstream_error(up.backends[i].id, "socket")
            return None
        if sock is None:
            stats.reject(SOCKET_LIMIT_REASON)
            return None
        try:
            await self._bind_upstream(sock, key, i)
            await sock.connect(sockaddr)
        except OSError:
            sock.close()
            up.record(i, ok=False, kind="connect")
            stats.upstream_error(up.backends[i].id, "connect")
            return None
        budget = ReplyBudget(self.amplification_factor) if self.amplification_factor else None
        session = _Session(key, i, addr, sock, budget)
        self._upstream_connected(session)
        # Count it before its task runs: a drain starting in between must see it in flight.
        self.worker.session_opened()
        stats.connection_opened()
        up.connection_opened(i)
        up.request_started(i)
        for _old_key, old in self.table.add(key, session, trio.current_time()):
            stats.reject(EVICTED_REASON)
            _end(old)
        self._added.set()
        self.worker.connections.start_soon(self._run_session, key, session)
        return session

    async def _bind_upstream(self, sock: trio.socket.SocketType, key: SessionKey, i: int) -> None:
        """Hook: bind the session's socket before it connects (default: the kernel picks)."""

    def _upstream_connected(self, session: _Session) -> None:
        """Hook: the session's socket is connected."""

    def _new_socket(self, family: int) -> trio.socket.SocketType | None:
        """A UDP socket; when the process is out of descriptors, the least recently used
        session gives its own up (a flood must not lock new clients out until expiry)."""
        while True:
            try:
                return trio.socket.socket(family, stdsocket.SOCK_DGRAM)
            except OSError as exc:
                if exc.errno not in _FD_EXHAUSTED:
                    raise
                victim = self.table.evict_lru()
                if victim is None:
                    return None
                self.runtime.stats.reject(EVICTED_REASON)
                _end(victim[1])

    async def serve_resolver(self) -> None:
        """Look up backend names the data path asked for, one at a time, off its path."""
        backends = self.runtime.upstreams.backends
        for i in range(len(backends)):
            if i not in self._literal:
                self.addresses.address(i, trio.current_time())  # resolve names up front
        while True:
            # A fresh event before taking the wanted names: a datagram asking during the
            # lookups below sets this one, so the next round starts at once.
            wake = self._resolve_wanted = trio.Event()
            for i in self.addresses.wanted():
                b = backends[i]
                with trio.move_on_after(RESOLVE_TIMEOUT_S):
                    try:
                        infos = await trio.socket.getaddrinfo(
                            b.host, b.port, type=stdsocket.SOCK_DGRAM
                        )
                    except OSError as exc:  # gaierror included
                        log.warning("udp_backend_unresolved", backend=b.id, error=str(exc))
                    else:
                        family, _type, _proto, _canon, sockaddr = infos[0]
                        self.addresses.resolved(
                            i, (int(family), tuple(sockaddr)), trio.current_time()
                        )
                        continue
                self.addresses.failed(i, trio.current_time())
            await wake.wait()

    def _admit_reply(self, session: _Session, data: bytes) -> bool:
        """Whether a backend reply may go to the client (the amplification budget)."""
        if session.budget is not None and not session.budget.try_send(len(data)):
            self.runtime.stats.reject(REPLY_BUDGET_REASON)
            return False
        return True

    def _session_ended(self, session: _Session) -> None:
        """Hook for subclasses that index sessions elsewhere."""

    async def _run_session(self, key: SessionKey, session: _Session) -> None:
        up = self.runtime.upstreams
        stats = self.runtime.stats
        i = session.backend
        try:
            with session.scope:
                while True:
                    try:
                        data = await session.sock.recv(MAX_DATAGRAM_BYTES)
                    except ConnectionRefusedError:
                        self._refused(session)
                        return
                    except OSError:
                        stats.upstream_error(self._backend_id(session), "recv")
                        return
                    if session.first_reply_s is None:
                        session.first_reply_s = trio.current_time()
                        up.record(i, ok=True)
                    self.table.touch(key, trio.current_time())
                    if not self._admit_reply(session, data):
                        continue
                    try:
                        await self.reply_sock.sendto(data, session.client_addr)
                    except OSError as exc:
                        # The client's side (ICMP, buffer): the backend did nothing wrong.
                        stats.upstream_error(self._backend_id(session), f"reply_{_send_kind(exc)}")
                        continue
                    stats.bytes_out(len(data))
        except trio.ClosedResourceError:
            pass  # ended from outside (evicted, expired) or the worker closed the reply socket
        finally:
            session.sock.close()
            self.table.discard(key, session)
            self._session_ended(session)
            # Balancers learn the time to the first reply (the UDP round trip), not the
            # session's lifetime, which is mostly the idle timeout.
            first = session.first_reply_s
            up.request_finished(i, None if first is None else first - session.started_s)
            up.connection_closed(i)
            stats.connection_closed()
            self.worker.session_closed()

    def _refused(self, session: _Session) -> None:
        """ICMP port unreachable from the backend: passive health hears it, the session ends."""
        self.runtime.upstreams.record(session.backend, ok=False, kind="refused")
        self.runtime.stats.upstream_error(self._backend_id(session), "refused")
        # Out of the table now, so the client's next datagram picks a backend afresh.
        self.table.discard(session.key, session)
        session.scope.cancel()

    def _backend_id(self, session: _Session) -> str:
        return self.runtime.upstreams.backends[session.backend].id

    def start_tasks(self) -> None:
        """Hook for subclasses with tasks of their own (in the connections nursery)."""

    async def serve_expiry(self) -> None:
        """End idle sessions; owns the reply socket, which it closes when the worker ends."""
        with self.reply_sock:
            while True:
                at = self.table.next_expiry_at()
                if at is None:
                    self._added = trio.Event()
                    await self._added.wait()
                    continue
                await trio.sleep_until(at)
                for _key, session in self.table.pop_expired(trio.current_time()):
                    _end(session)


def _end(session: _Session) -> None:
    """End a session now: its descriptor is free at once, its task unwinds soon."""
    session.sock.close()
    session.scope.cancel()


def _send_kind(exc: OSError) -> str:
    return "send_buffer" if exc.errno in (errno.ENOBUFS, errno.EAGAIN) else "send"


async def serve_udp_listener(
    runtime: ListenerRuntime,
    worker: Worker,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the listener's datagrams until cancelled (drain); sessions outlive this."""
    await serve_datagram_listener(UdpListener(runtime, worker), task_status=task_status)


async def serve_datagram_listener(
    listener: UdpListener, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    runtime, worker = listener.runtime, listener.worker
    # Expiry, name resolution and the sessions run in the worker's connections nursery:
    # they must keep working after the drain stops this read loop.
    worker.connections.start_soon(listener.serve_expiry)
    worker.connections.start_soon(listener.serve_resolver)
    listener.start_tasks()
    log.info(
        "udp_listener_started",
        listener=runtime.plan.name,
        max_sessions=listener.table.max_sessions,
        idle_timeout_s=listener.table.idle_timeout_s,
    )
    task_status.started()
    await listener.serve_datagrams()
