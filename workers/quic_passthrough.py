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

The route table is shared by every worker and generation through a BPF map whose fd the
supervisor passes (workers/cid_store.py); without it each worker keeps its own routes.
Must never: decrypt, move a known connection to another backend, or block the read loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog
import trio

from gateway.config.schema import QuicPassthroughConfig
from gateway.passthrough.cid_record import backend_key
from gateway.passthrough.cid_routes import CidRoutes
from gateway.passthrough.public_header import parse_public_header
from gateway.passthrough.quic_lb import QuicLbDecoder
from gateway.passthrough.routing import Via, route_client_packet, server_route
from gateway.source_rate import SourceRate
from workers.cid_store import BpfCidStore
from workers.udp_proxy import ClientKey, UdpListener, _Session, serve_datagram_listener

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

log = structlog.get_logger("expressgateway.worker")

SOURCE_RATE_REASON = "quic_source_rate"
BACKEND_DOWN_REASON = "quic_backend_down"
ROUTE_EVICTED_REASON = "quic_route_evicted"
SHARED_ROUTE_LOST_REASON = "quic_shared_route_lost"
ROUTE_SWEEP_S = 1.0


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
        fd = worker.boot.cid_table_fds.get(runtime.plan.name)
        self.store = BpfCidStore(fd) if fd is not None else None
        self.routes = CidRoutes(
            max_entries=q.max_routes,
            idle_timeout_s=q.route_idle_timeout_ms / 1000,
            shared=self.store,
        )
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
            shared_table=fd is not None,
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
        await self._send(session, data)

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
