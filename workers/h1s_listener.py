"""An `h1s` listener: terminate TLS (SNI picks the certificate), then hand the connection to
the HTTP front that ALPN chose.

Owns the per-connection sequence: TLS handshake bounded by the plan's
``handshake_timeout_ms`` (``workers.tls_listener._handshake``: a client that never finishes
is closed at the deadline, a refused one gets its alert), the ``ClientConn`` record
(scheme ``https``, the SNI, the ALPN result) and the dispatch: ALPN ``h2`` goes to the front
registered as ``"h2"`` in ``workers.http.registry.FRONTS``, anything else (``http/1.1`` or no
ALPN) to the one registered as ``"h1"``; both share the listener's FrontKit
(``workers.http_listener.make_front_kit``), whose H1 context carries the name table of the
misdirected-request check when the listener has more than one certificate. ``h2`` is
offered in ALPN only when such a front is registered and ``alpn`` lists it. Contexts and
fronts are built once per worker and listener, in ``make_h1s_handler``. Must never read
the config (only the plan) nor log per connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from workers.http.front import ClientConn
from workers.http.registry import FRONTS
from workers.http_listener import make_front_kit
from workers.sni_contexts import ListenerCertificates, misdirect_table
from workers.tls_listener import _handshake

if TYPE_CHECKING:
    from workers.worker import ListenerRuntime, Worker

Handler = Callable[[trio.socket.SocketType, tuple[str, int]], Awaitable[None]]

# The ALPN protocol id (RFC 7301 registry) that selects the HTTP/2 front, and its registry name.
H2_ALPN = "h2"


def make_h1s_handler(runtime: ListenerRuntime, worker: Worker) -> Handler:
    plan = runtime.plan.tls
    if plan is None:
        raise RuntimeError(f"h1s listener {runtime.plan.name!r} has no TLS plan")
    kit = make_front_kit(runtime, worker)  # also hooks drain for every front
    kit.h1.scheme = b"https"
    # None with one certificate: nothing can be misdirected, the per-request check is skipped.
    kit.h1.server_names = kit.proxy.server_names = misdirect_table(plan)
    h1_front = FRONTS["h1"](kit)
    h2_factory = FRONTS.get("h2")
    h2_front = h2_factory(kit) if h2_factory is not None and H2_ALPN in plan.alpn else None
    alpn = [p for p in plan.alpn if p != H2_ALPN or h2_front is not None]
    certificates = ListenerCertificates(plan, alpn)
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
