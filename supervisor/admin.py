"""The admin HTTP listener: `/metrics`, `/livez`, `/healthz`, `/readyz`, `/startupz`.

Owns the HTTP/1.1 conversation with scrapers and probes (h11, keep-alive, GET/HEAD only),
bearer-token checking for `/metrics`, and the defences an exposed port needs: a deadline on
every request head, a cap on request size, a cap on concurrent connections and one per
client IP, and a per-connection error boundary so junk from one peer never stops the
listener. Probes are exempt from the connection cap: a connection over it still gets one
request answered on a small separate lane (short head deadline, then close) if that
request is a probe; anything else there is answered 503. So a flood that fills the cap
cannot make the orchestrator restart a healthy gateway.
`/metrics` is rendered in a worker thread, one render at a time (`before_render` first
takes the merged view on the event loop), so a big exposition never stalls the loop
that reads heartbeats and answers gatewayctl.
It must never decide readiness (the supervisor flips `AdminState`), never hand-write the
Prometheus format (prometheus_client renders it), and never log per request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import h11
import structlog
import trio
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from gateway.logs import RateLimitedLog

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_RECEIVE_BYTES = 8192
_PROBES = frozenset({"/livez", "/healthz", "/readyz", "/startupz"})


@dataclass
class AdminState:
    """What the admin listener reports. The supervisor flips the booleans:
    `boot_completed` once the first generation is up (never cleared), `ready` while a
    generation serves, `draining` from the start of a graceful stop to the end."""

    registry: CollectorRegistry
    api_token_sha256: str | None = None
    boot_completed: bool = False
    ready: bool = False
    draining: bool = False
    header_timeout_s: float = 10.0
    max_request_bytes: int = 16 * 1024
    max_connections: int = 64
    max_connections_per_ip: int = 8
    probe_lane_connections: int = 16  # over max_connections: one probe each, then close
    probe_lane_timeout_s: float = 2.0
    # On the event loop before each render (the supervisor: fold in its own values and
    # take the merged view the render thread reads); None: the collectors are thread-safe.
    before_render: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.api_token_sha256 is not None:
            if _SHA256_HEX.fullmatch(self.api_token_sha256) is None:
                raise ValueError("api_token_sha256 must be 64 hex characters (a SHA-256 digest)")
            self.api_token_sha256 = self.api_token_sha256.lower()

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        return "ok" if self.ready else "starting"

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining

    def token_accepted(self, authorization: bytes | None) -> bool:
        """True when no token is configured or `authorization` is `Bearer <token>` whose
        SHA-256 matches, compared in constant time."""
        if self.api_token_sha256 is None:
            return True
        if authorization is None:
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return False
        digest = hashlib.sha256(token.strip()).hexdigest()
        return hmac.compare_digest(digest, self.api_token_sha256)


class _Rejected(Exception):
    """The request cannot be answered normally; answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()
    render_accept: str | None = None  # /metrics: render for this Accept header, off the loop


_BUSY = _Answer(503, b"busy: only probes are answered now\n", extra_headers=(("retry-after", "1"),))


def decide_answer(
    state: AdminState, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> _Answer:
    """Decide the response for one request (no I/O)."""
    if method not in (b"GET", b"HEAD"):
        return _Answer(405, b"method not allowed\n", extra_headers=(("allow", "GET, HEAD"),))
    path = target.split(b"?", 1)[0].decode("ascii", "replace")
    if path in _PROBES:
        return _probe(state, path)
    if path != "/metrics":
        return _Answer(404, b"not found\n")
    if not state.token_accepted(_header(headers, b"authorization")):
        return _Answer(
            401,
            b"unauthorized\n",
            extra_headers=(("www-authenticate", 'Bearer realm="expressgateway"'),),
        )
    accept = (_header(headers, b"accept") or b"").decode("latin-1")
    return _Answer(200, b"", render_accept=accept)


def render_exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The Prometheus exposition for `accept` (blocking: run it in a thread)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _probe(state: AdminState, path: str) -> _Answer:
    if path == "/readyz":
        ok = state.is_ready
    elif path == "/startupz":
        ok = state.boot_completed
    else:  # /livez, /healthz: answering at all is the proof of life
        ok = True
    body = json.dumps(
        {"status": state.status, "ready": state.is_ready, "boot_completed": state.boot_completed}
    ).encode()
    return _Answer(200 if ok else 503, body + b"\n", "application/json")


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _peer_ip(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except OSError:
            pass
    return ""


class _AdminServer:
    def __init__(self, state: AdminState, log: RateLimitedLog) -> None:
        self.state = state
        self.log = log
        self.limiter = trio.CapacityLimiter(state.max_connections)
        self.probe_lane = trio.CapacityLimiter(state.probe_lane_connections)
        self.render_lock = trio.Lock()  # one render thread at a time, whatever the scrapers
        self.per_ip: dict[str, int] = {}

    async def handle(self, stream: trio.abc.Stream) -> None:
        ip = _peer_ip(stream)
        if self.per_ip.get(ip, 0) >= self.state.max_connections_per_ip:
            self.log.warning(
                "admin_connection_refused",
                key="admin_connection_refused:per_ip",
                reason="per_ip_cap",
                client=ip,
                limit=self.state.max_connections_per_ip,
            )
            await trio.aclose_forcefully(stream)
            return
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        try:
            await self._admit(stream)
        finally:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]

    async def _admit(self, stream: trio.abc.Stream) -> None:
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._probe_lane(stream)
            return
        try:
            await self._bounded(stream, probes_only=False)
        finally:
            self.limiter.release()

    async def _probe_lane(self, stream: trio.abc.Stream) -> None:
        try:
            self.probe_lane.acquire_nowait()
        except trio.WouldBlock:
            self.log.warning(
                "admin_connection_refused",
                key="admin_connection_refused:cap",
                reason="connection_cap",
                limit=self.state.max_connections + self.state.probe_lane_connections,
            )
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._bounded(stream, probes_only=True)
        finally:
            self.probe_lane.release()

    async def _bounded(self, stream: trio.abc.Stream, *, probes_only: bool) -> None:
        try:
            if probes_only:
                with trio.move_on_after(self.state.probe_lane_timeout_s):
                    await self._converse(stream, probes_only=True)
            else:
                await self._converse(stream, probes_only=False)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; nothing to answer
        except trio.TooSlowError:
            self.log.warning("admin_response_stalled", timeout_s=self.state.header_timeout_s)
        except h11.LocalProtocolError as exc:
            self.log.warning("admin_response_failed", error=str(exc))
        except Exception:
            # The boundary that keeps one bad connection from killing the listener
            # (and with it the supervisor's nursery). Cancellation is a BaseException
            # and passes through.
            structlog.get_logger().exception("admin_connection_crashed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _render(self, ans: _Answer) -> _Answer:
        assert ans.render_accept is not None
        async with self.render_lock:
            try:
                if self.state.before_render is not None:
                    self.state.before_render()
                body, content_type = await trio.to_thread.run_sync(
                    render_exposition, self.state.registry, ans.render_accept
                )
            except Exception:
                structlog.get_logger().exception("admin_render_failed")
                return _Answer(500, b"internal error\n")
        return _Answer(200, body, content_type)

    async def _converse(self, stream: trio.abc.Stream, *, probes_only: bool) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.state.max_request_bytes)
        while True:
            try:
                request = await self._read_request(stream, conn)
            except _Rejected as rej:
                self.log.warning(
                    "admin_request_rejected", status=rej.status, reason=rej.reason[:200]
                )
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(stream, conn, None, _Answer(rej.status, b""), close=True)
                    await _linger(stream)
                return
            if request is None:
                return
            path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
            if probes_only and path not in _PROBES:
                ans = _BUSY
            else:
                try:
                    ans = decide_answer(
                        self.state, request.method, request.target, list(request.headers)
                    )
                except Exception:
                    structlog.get_logger().exception("admin_answer_failed", target=request.target)
                    ans = _Answer(500, b"internal error\n")
            if ans.render_accept is not None:
                ans = await self._render(ans)
            await self._send(stream, conn, request.method, ans, close=probes_only)
            if probes_only:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self, stream: trio.abc.Stream, conn: h11.Connection
    ) -> h11.Request | None:
        """The next complete request (body read and discarded), or None on a clean EOF."""
        request: h11.Request | None = None
        body_bytes = 0
        received_any = bool(conn.trailing_data[0])
        with trio.move_on_after(self.state.header_timeout_s):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _Rejected(exc.error_status_hint, str(exc))
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(_RECEIVE_BYTES)
                    received_any = received_any or bool(data)
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body_bytes += len(event.data)
                    if body_bytes > self.state.max_request_bytes:
                        raise _Rejected(413, "request body too large")
                elif isinstance(event, h11.EndOfMessage):
                    return request
                elif isinstance(event, h11.ConnectionClosed):
                    return None
                else:
                    raise _Rejected(400, f"unexpected event {type(event).__name__}")
        if received_any:
            raise _Rejected(408, "request not received within the header timeout")
        return None  # an idle keep-alive connection timed out: close without a word

    async def _send(
        self,
        stream: trio.abc.Stream,
        conn: h11.Connection,
        method: bytes | None,
        ans: _Answer,
        *,
        close: bool,
    ) -> None:
        headers = [
            ("content-type", ans.content_type),
            ("content-length", str(len(ans.body))),
            ("cache-control", "no-store"),
            *ans.extra_headers,
        ]
        if close:
            headers.append(("connection", "close"))
        out = conn.send(h11.Response(status_code=ans.status, headers=headers))
        if method != b"HEAD" and ans.body:
            out = (out or b"") + (conn.send(h11.Data(data=ans.body)) or b"")
        out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        # A peer that stops reading must not pin the connection: give up and close.
        with trio.fail_after(self.state.header_timeout_s):
            await stream.send_all(out)


_LINGER_S = 1.0
_LINGER_BYTES = 256 * 1024


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close and discard what the peer is still sending, briefly, so closing with
    unread input does not reset the connection and destroy the error response in flight."""
    if isinstance(stream, trio.SocketStream):
        await stream.send_eof()
    discarded = 0
    with trio.move_on_after(_LINGER_S):
        while discarded < _LINGER_BYTES:
            chunk = await stream.receive_some(_RECEIVE_BYTES)
            if not chunk:
                return
            discarded += len(chunk)


async def serve_admin(
    listener: trio.SocketListener | trio.abc.Listener[trio.abc.Stream],
    state: AdminState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin endpoints on `listener` until cancelled. The caller owns the
    listener (opens it, and closes it after this returns)."""
    log = RateLimitedLog(
        structlog.get_logger(), max_per_window=5, window_s=60.0, now=trio.current_time
    )
    server = _AdminServer(state, log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve_log_flush, log)
        await nursery.start(partial(trio.serve_listeners, server.handle, [listener]))
        task_status.started()


async def _serve_log_flush(log: RateLimitedLog) -> None:
    while True:
        await trio.sleep(log.window_s)
        log.flush()
