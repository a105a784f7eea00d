"""Dialling a backend: resolve, connect, PROXY header, TLS — one deadline, OS errors translated once.

`dial_backend` returns a connected non-blocking trio socket. `open_upstream` adds what
the backend's plan asks for, in the order the specs require: TCP connect, then the
PROXY protocol header (it precedes any TLS bytes), then the TLS handshake with
certificate and hostname verification. Failures raise UpstreamConnectError /
UpstreamTimeout (gateway/errors.py) carrying the kind for metrics and passive health; a
socket this worker cannot create (EMFILE, ENFILE, no local port) raises
LocalResourceExhausted instead, which must never count against the backend.
"""

from __future__ import annotations

import errno
import socket as stdsocket
import ssl

import trio

from gateway.config.plan import BackendPlan
from gateway.errors import (
    LOCAL_EXHAUSTION_ERRNOS,
    GatewayError,
    LocalResourceExhausted,
    UpstreamConnectError,
    UpstreamTimeout,
)
from gateway.proxy_protocol import Address, ProxyHeaderError, encode
from workers.tls_context import backend_context, backend_server_name

# A plain backend stays a socket (the relay can splice); a TLS backend is a stream.
Upstream = trio.socket.SocketType | trio.SSLStream[trio.SocketStream]


async def _connect(backend: BackendPlan) -> trio.socket.SocketType:
    try:
        infos = await trio.socket.getaddrinfo(
            backend.host, backend.port, type=stdsocket.SOCK_STREAM
        )
    except OSError as exc:
        if exc.errno in LOCAL_EXHAUSTION_ERRNOS:  # EAI_SYSTEM: the resolver's own socket
            raise _local_or(exc, backend) from None
        raise UpstreamConnectError("resolve", f"{backend.id}: {exc}") from None
    last: OSError | None = None
    for family, type_, proto, _canon, sockaddr in infos:
        try:
            sock = trio.socket.socket(family, type_, proto)
        except OSError as exc:
            raise _local_or(exc, backend) from None
        try:
            sock.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
            await sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            if (
                exc.errno in LOCAL_EXHAUSTION_ERRNOS
            ):  # e.g. no local port left: not the backend's fault
                raise _local_or(exc, backend) from None
            last = exc
        except BaseException:
            sock.close()
            raise
    kind = "refused" if last is not None and last.errno == errno.ECONNREFUSED else "connect"
    raise UpstreamConnectError(kind, f"{backend.id}: {last.strerror if last else 'no address'}")


def _local_or(exc: OSError, backend: BackendPlan) -> GatewayError:
    """A socket we could not even create: this worker's problem (EMFILE), not the backend's."""
    if exc.errno in LOCAL_EXHAUSTION_ERRNOS:
        name = errno.errorcode.get(exc.errno or 0, "?")
        return LocalResourceExhausted(f"{backend.id}: {name} ({exc.strerror})")
    return UpstreamConnectError("connect", f"{backend.id}: {exc.strerror}")


async def dial_backend(backend: BackendPlan, *, timeout_s: float) -> trio.socket.SocketType:
    with trio.move_on_after(timeout_s):
        return await _connect(backend)
    raise UpstreamTimeout("connect_timeout", f"{backend.id}: no connection within {timeout_s:.3f}s")


def proxy_header(backend: BackendPlan, client: Address, local: Address) -> bytes:
    """The PROXY header this backend wants (b"" for none): client -> the address it dialled."""
    if backend.proxy_protocol not in ("v1", "v2"):
        return b""
    try:
        return encode("v1" if backend.proxy_protocol == "v1" else "v2", client, local)
    except ProxyHeaderError as exc:
        raise UpstreamConnectError("proxy_header", f"{backend.id}: {exc}") from None


async def _send_all(sock: trio.socket.SocketType, data: bytes, backend: BackendPlan) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[await sock.send(view) :]
        except OSError as exc:
            raise UpstreamConnectError("connect", f"{backend.id}: {exc.strerror}") from None


async def start_tls(
    sock: trio.socket.SocketType, backend: BackendPlan
) -> trio.SSLStream[trio.SocketStream]:
    """TLS over a connected socket with the backend's verification and ALPN list."""
    assert backend.tls is not None
    try:
        # Cached: loaded once per worker, setting and ALPN list (load_backend_tls, at boot).
        context = backend_context(backend.tls, backend_alpn(backend))
    except (OSError, ssl.SSLError) as exc:  # preflight checks the CA file; it may change since
        raise UpstreamConnectError("tls_config", f"{backend.id}: {exc}") from None
    stream = trio.SSLStream(
        trio.SocketStream(sock),
        context,
        server_hostname=backend_server_name(backend.tls, backend.host),
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
        raise UpstreamConnectError("tls_handshake", f"{backend.id}: {reason}") from None
    return stream


async def open_upstream(
    backend: BackendPlan, *, timeout_s: float, client: Address, local: Address
) -> Upstream:
    """Connect, send the PROXY header, start TLS, all within `timeout_s`."""
    header = proxy_header(backend, client, local)
    with trio.move_on_after(timeout_s):
        sock = await _connect(backend)
        try:
            if header:
                await _send_all(sock, header, backend)
            if backend.tls is not None:
                return await start_tls(sock, backend)
        except BaseException:
            sock.close()
            raise
        return sock
    raise UpstreamTimeout(
        "connect_timeout", f"{backend.id}: not connected (TCP, PROXY, TLS) within {timeout_s:.3f}s"
    )


def backend_alpn(backend: BackendPlan) -> tuple[str, ...]:
    """The ALPN list offered to a TLS backend: ``h2`` alone to an HTTP/2 one, else none."""
    return ("h2",) if backend.protocol == "h2" else ()


def load_backend_tls(backends: list[BackendPlan]) -> None:
    """Build every backend's client context now (start-up, before the worker gives up its
    privileges and perhaps the right to read the CA file), so a bad CA fails the boot."""
    for backend in backends:
        if backend.tls is not None:
            backend_context(backend.tls, backend_alpn(backend))


async def open_backend_stream(backend: BackendPlan) -> trio.abc.Stream:
    """A stream for a pooled HTTP upstream: TCP, then TLS when the plan asks for it.

    No PROXY header: a pooled connection serves many clients, so validation refuses
    `proxy_protocol` on HTTP backends. The caller bounds the time (the pool's timeout).
    """
    sock = await _connect(backend)
    try:
        if backend.tls is not None:
            return await start_tls(sock, backend)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)
