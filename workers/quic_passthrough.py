"""The datagram proxy of a `protocol = "quic_passthrough"` listener: QUIC by connection ID.

Never decrypts: each client datagram's public header goes to the pure routing decision
(gateway/passthrough/routing.py) — QUIC-LB server ID, then the connection-ID route
table, then Maglev over a new Initial's DCID, then the client address's flow — and the
datagram travels through a session of the UDP machinery (workers/udp_proxy.py) keyed by
(client address, backend): one connected socket towards the backend per pair, so a
backend sees each client path as one address and QUIC's own migration handling covers
a client that moves (NAT rebinding) or a packet that reaches another worker or a new
generation. The backend's long-header replies teach the table its connection IDs
(Initial, Handshake, Retry SCIDs) before they reach the client.

Two tables are shared by every worker and generation through BPF maps whose fds the
supervisor passes (workers/bpf_map.py): the connection-ID routes, and the flows' local
ports — the first session of a (client address, backend) flow records the port it sends
from, and any other worker or generation that handles the flow binds the same port
(SO_REUSEPORT, set only after the first socket got its port, so an ephemeral bind never
lands on a port in use), so the backend keeps seeing one peer address: no migration
for it, and its Retry tokens (bound to that address) stay valid across a reload.
Without the maps each worker keeps its own routes and picks its own ports.
Must never: decrypt, move a known connection to another backend, or block the read loop.
"""

from __future__ import annotations

import socket as stdsocket
import time
from typing import TYPE_CHECKING

import structlog
import trio

from gateway.config.schema import QuicPassthroughConfig
from gateway.passthrough import cid_record, flow_record
from gateway.passthrough.cid_record import backend_key
from gateway.passthrough.cid_routes import CidRoutes
from gateway.passthrough.public_header import parse_public_header
from gateway.passthrough.quic_lb import QuicLbDecoder
from gateway.passthrough.routing import Via, route_client_packet, server_route
from gateway.source_rate import SourceRate
from workers.bpf_map import BPF_ANY, BPF_EXIST, BpfHashMap
from workers.udp_proxy import (
    ClientKey,
    SessionKey,
    UdpListener,
    _Session,
    serve_datagram_listener,
)

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

log = structlog.get_logger("expressgateway.worker")

SOURCE_RATE_REASON = "quic_source_rate"
BACKEND_DOWN_REASON = "quic_backend_down"
ROUTE_EVICTED_REASON = "quic_route_evicted"
SHARED_ROUTE_LOST_REASON = "quic_shared_route_lost"
ROUTE_SWEEP_S = 1.0
FLOW_REFRESH_S = 1.0


class _SharedRoutes:
    """`SharedCidStore` over the routes map."""

    __slots__ = ("map",)

    def __init__(self, fd: int) -> None:
        self.map = BpfHashMap(fd, cid_record.KEY_BYTES, cid_record.VALUE_BYTES)

    def get(self, cid: bytes) -> tuple[int, float] | None:
        raw = self.map.lookup(cid_record.encode_key(cid))
        if raw is None:
            return None
        backend, seen_ms = cid_record.decode_value(raw)
        return backend, seen_ms / 1000

    def put(self, cid: bytes, backend: int, now: float, *, must_exist: bool = False) -> bool:
        value = cid_record.encode_value(backend, int(now * 1000))
        return self.map.update(
            cid_record.encode_key(cid), value, BPF_EXIST if must_exist else BPF_ANY
        )


def _quic_lb(runtime: ListenerRuntime, q: QuicPassthroughConfig) -> QuicLbDecoder | None:
    lb = q.quic_lb
    if lb is None:
        return None
    servers = {
        bytes.fromhex(b.quic_server_id): i
        for i, b in enumerate(runtime.plan.backends)
        if b.quic_server_id is not None
    }
    return QuicLbDecoder(
        config_id=lb.config_id,
        server_id_len=lb.server_id_len,
        server_id_offset=lb.server_id_offset,
        servers=servers,
    )


class QuicPassthroughListener(UdpListener):
    def __init__(self, runtime: ListenerRuntime, worker: Worker) -> None:
        super().__init__(runtime, worker)
        q = runtime.plan.quic_passthrough or QuicPassthroughConfig()
        self.q = q
        fds = worker.boot.quic_table_fds.get(runtime.plan.name)
        shared = fds is not None and len(fds) == 2
        self.routes = CidRoutes(
            max_entries=q.max_routes,
            idle_timeout_s=q.route_idle_timeout_ms / 1000,
            shared=_SharedRoutes(fds[0]) if shared and fds else None,
        )
        self.flows = (
            BpfHashMap(fds[1], flow_record.KEY_BYTES, flow_record.VALUE_BYTES)
            if shared and fds
            else None
        )
        # A recorded port is joined only while some session of the flow surely lives.
        self.flow_fresh_s = self.table.idle_timeout_s
        self.keys = [backend_key(b.id) for b in runtime.plan.backends]
        self.index_of = {k: i for i, k in enumerate(self.keys)}
        self.quic_lb = _quic_lb(runtime, q)
        rate = q.new_connections_per_source_per_s
        self.conn_rate = SourceRate(rate_per_s=rate, burst=rate) if rate else None
        self.flow_of: dict[ClientKey, _Session] = {}  # the client address's latest session
        self._counted = (0, 0)
        log.info(
            "quic_passthrough_started",
            listener=runtime.plan.name,
            shared_tables=shared,
            quic_lb=self.quic_lb is not None,
            max_routes=q.max_routes,
        )

    async def _forward(self, data: bytes, addr: tuple[object, ...]) -> None:
        now = time.monotonic()
        client: ClientKey = (addr[0], addr[1])  # type: ignore[assignment]
        header = parse_public_header(data, self.q.server_cid_len)
        flow = self.flow_of.get(client)
        route = route_client_packet(
            header,
            len(data),
            routes=self.routes,
            quic_lb=self.quic_lb,
            index_of=self.index_of,
            address_backend=None if flow is None else flow.backend,
            min_dcid_len=self.q.min_client_dcid_len,
            now=now,
        )
        stats = self.runtime.stats
        up = self.runtime.upstreams
        via = route.via
        if via is Via.DROP:
            stats.reject(route.reason)
            return
        assert header is not None
        if via is Via.NEW:
            if self.conn_rate is not None and not self.conn_rate.allow(client[0], now):
                stats.reject(SOURCE_RATE_REASON)
                return
            i = up.choose(key=header.dcid, now=now)
            if i is None:
                stats.no_backend()
                return
        else:
            i = route.backend
            assert i is not None
            if i not in up.eligible(now):
                # The connection lives on that backend alone; moving it would only end it
                # with a stateless reset elsewhere. Its client retries with a new Initial.
                stats.reject(BACKEND_DOWN_REASON)
                return
        if route.record:
            self.routes.learn(header.dcid, self.keys[i], now)
        key = (client[0], client[1], i)
        session = self.table.get(key, trio.current_time())
        if session is None:
            session = await self._open(key, addr, i)
            if session is None:
                return
        self.flow_of[client] = session
        if session.shared_key is not None and now - session.shared_at_s >= FLOW_REFRESH_S:
            self._record_flow(session, now)
        await self._send(session, data)

    async def _bind_upstream(self, sock: trio.socket.SocketType, key: SessionKey, i: int) -> None:
        """Send from the flow's recorded port when another worker or generation has one."""
        if self.flows is None:
            return
        wildcard = "::" if sock.family == stdsocket.AF_INET6 else "0.0.0.0"
        raw = self.flows.lookup(self._flow_key(key, i))
        if raw is not None:
            port, seen_ms = flow_record.decode_value(raw)
            if time.monotonic() - seen_ms / 1000 < self.flow_fresh_s:
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
                try:
                    await sock.bind((wildcard, port))
                    return
                except OSError:
                    # Gone meanwhile, or held by a socket that is not ours to join.
                    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 0)
        await sock.bind((wildcard, 0))  # a port no other socket holds

    def _upstream_connected(self, session: _Session) -> None:
        if self.flows is None:
            return
        # Joinable from now on; set after bind so no ephemeral bind can pick this port.
        session.sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
        session.shared_key = self._flow_key(session.key, session.backend)
        self._record_flow(session, time.monotonic())

    def _flow_key(self, key: SessionKey, i: int) -> bytes:
        return flow_record.encode_key(str(key[0]), int(key[1]), self.keys[i])  # type: ignore[call-overload]

    def _record_flow(self, session: _Session, now: float) -> None:
        assert self.flows is not None and session.shared_key is not None
        session.shared_at_s = now
        port = session.sock.getsockname()[1]
        self.flows.update(session.shared_key, flow_record.encode_value(port, int(now * 1000)))

    def _admit_reply(self, session: _Session, data: bytes) -> bool:
        if data and data[0] & 0x80:  # only long headers carry an SCID to learn
            header = parse_public_header(data, self.q.server_cid_len)
            scid = server_route(header, session.backend, self.quic_lb)
            if scid is not None:
                self.routes.learn(scid, self.keys[session.backend], time.monotonic())
        return True

    def _session_ended(self, session: _Session) -> None:
        client: ClientKey = (session.key[0], session.key[1])  # type: ignore[assignment]
        if self.flow_of.get(client) is session:
            del self.flow_of[client]

    def start_tasks(self) -> None:
        self.worker.connections.start_soon(self.serve_route_expiry)

    async def serve_route_expiry(self) -> None:
        """Sweep idle routes and count what the tables evicted."""
        metrics = self.runtime.stats.metrics
        while True:
            await trio.sleep(ROUTE_SWEEP_S)
            self.routes.expire(time.monotonic())
            evicted, lost = self.routes.evictions_total, self.routes.shared_lost_total
            was_evicted, was_lost = self._counted
            if evicted > was_evicted:
                metrics.security_rejections[(ROUTE_EVICTED_REASON,)] += evicted - was_evicted
            if lost > was_lost:
                metrics.security_rejections[(SHARED_ROUTE_LOST_REASON,)] += lost - was_lost
            self._counted = (evicted, lost)


async def serve_quic_passthrough_listener(
    runtime: ListenerRuntime,
    worker: Worker,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the listener's datagrams until cancelled (drain); sessions outlive this."""
    listener = QuicPassthroughListener(runtime, worker)
    await serve_datagram_listener(listener, task_status=task_status)
