"""An `h1s` listener: terminate TLS (SNI picks the certificate), then hand the connection to
the HTTP front that ALPN chose.

Owns the per-connection sequence: TLS handshake bounded by the plan's
``handshake_timeout_ms`` (``workers.tls_listener._handshake``: a client that never finishes
is closed at the deadline, a refused one gets its alert), the ``ClientConn`` record
(scheme ``https``, the SNI, the ALPN result) and the dispatch: ALPN ``h2`` goes to the front
registered as ``"h2"`` in ``workers.http.registry.FRONTS``, anything else (``http/1.1`` or no
ALPN) to the HTTP/1.1 front (``serve_h1_connection`` with the misdirected-request check on
when the listener has more than one certificate). ``h2`` is offered in ALPN only when such
a front is registered. Contexts and fronts are built once per worker and listener, in
``make_h1s_handler``. Must never read the config (only the plan) nor log per connection.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from gateway.config.plan import ListenerTlsPlan
from workers.http.front import ClientConn, FrontHandler
from workers.http1 import serve_h1_connection
from workers.http1_listener import make_h1_context
from workers.sni_contexts import ListenerCertificates, misdirect_table
from workers.tls_listener import _handshake

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

Handler = Callable[[trio.socket.SocketType, tuple[str, int]], Awaitable[None]]

# The ALPN protocol id (RFC 7301 registry) that selects the HTTP/2 front.
H2_ALPN = "h2"
H2_FRONT = "h2"


def registered_front(name: str, runtime: ListenerRuntime, worker: Worker) -> FrontHandler | None:
    """The front ``name`` from ``workers.http.registry.FRONTS``, built for this listener.

    A registry entry is a factory ``(ListenerRuntime, Worker) -> FrontHandler``. None when
    the registry or the entry does not exist in this build (then its ALPN id is not offered).
    """
    try:
        registry = importlib.import_module("workers.http.registry")
    except ModuleNotFoundError as exc:
        if exc.name != "workers.http.registry":
            raise
        return None
    factory = registry.FRONTS.get(name)
    if factory is None:
        return None
    front: FrontHandler = factory(runtime, worker)
    return front


def make_h1_front(
    runtime: ListenerRuntime,
    worker: Worker,
    plan: ListenerTlsPlan,
    certificates: ListenerCertificates,
) -> FrontHandler:
    """Today's HTTP/1.1 proxy behind TLS: scheme https, 421 across certificates."""
    ctx = make_h1_context(runtime, worker)
    ctx.scheme = b"https"
    names = certificates.names
    # One certificate: nothing can be misdirected, and the per-request check costs nothing.
    ctx.server_names = misdirect_table(plan)
    runtime.on_drain = ctx.start_drain

    async def h1(conn: ClientConn) -> None:
        await serve_h1_connection(
            conn.stream, ctx, conn.client_ip, names.certificate_for_sni(conn.sni)
        )

    return h1


def make_h1s_handler(runtime: ListenerRuntime, worker: Worker) -> Handler:
    plan = runtime.plan.tls
    if plan is None:
        raise RuntimeError(f"h1s listener {runtime.plan.name!r} has no TLS plan")
    h2_front = registered_front(H2_FRONT, runtime, worker) if H2_ALPN in plan.alpn else None
    h2_drain = runtime.on_drain  # whatever the H2 front hooked, kept beside the H1 one
    alpn = [p for p in plan.alpn if p != H2_ALPN or h2_front is not None]
    certificates = ListenerCertificates(plan, alpn)
    h1_front = make_h1_front(runtime, worker, plan, certificates)
    if h2_drain is not None:
        h1_drain = runtime.on_drain
        assert h1_drain is not None

        def drain_both(grace_s: float) -> None:
            h1_drain(grace_s)
            h2_drain(grace_s)

        runtime.on_drain = drain_both
    handshake_timeout_s = plan.handshake_timeout_ms / 1000
    stats = runtime.stats

    async def handle(sock: trio.socket.SocketType, addr: tuple[str, int]) -> None:
        # https_compatible: HTTP clients often close without close_notify (RFC 9110 §4.2.2
        # leaves truncation to the message framing), and we need not wait for theirs.
        stream = trio.SSLStream(
            trio.SocketStream(sock), certificates.default, server_side=True, https_compatible=True
        )
        try:
            failure = await _handshake(stream, handshake_timeout_s)
        finally:
            sni = certificates.take_server_name()
        if failure is not None:
            stats.reject(failure)
            await trio.aclose_forcefully(stream)
            return
        negotiated = stream.selected_alpn_protocol()
        conn = ClientConn(stream, addr[0], scheme=b"https", sni=sni, alpn=negotiated)
        if negotiated == H2_ALPN and h2_front is not None:
            await h2_front(conn)
        else:
            await h1_front(conn)

    return handle
