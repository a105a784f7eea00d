"""Dialling an HTTP/2 backend: h2c with prior knowledge, or TLS that must negotiate ``h2``.

Owns the connect factory ``H2Back`` is built with: from a backend's plan, a plain TCP stream
(no ``tls`` table: the HTTP/2 preface goes straight on it, RFC 9113 §3.3) or a TLS stream
whose ALPN offered only ``h2`` and whose server selected it (else a clear error: speaking
HTTP/2 to an HTTP/1.1 server fails later and obscurely). TLS policy, verification and the
handshake are the h1 backends' (``workers/dial.start_tls``), with ALPN ``h2`` offered (a
context of its own: ``tls_context`` caches one per setting and ALPN list). Must never pool.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import trio

from gateway.config.plan import BackendPlan
from gateway.errors import UpstreamConnectError, UpstreamError
from workers.dial import dial_backend, start_tls
from workers.http1.backend import Backend, Connect, ConnectFailed

ALPN_H2 = "h2"


async def open_h2_backend_stream(backend: BackendPlan) -> trio.abc.Stream:
    """TCP (the caller bounds the time), then TLS + ALPN h2 when the plan has ``tls``."""
    sock = await dial_backend(backend, timeout_s=math.inf)
    if backend.tls is None:
        return trio.SocketStream(sock)
    try:
        stream = await start_tls(sock, backend)  # offers ALPN h2 alone (backend_alpn)
    except BaseException:
        sock.close()
        raise
    selected = stream.selected_alpn_protocol()
    if selected != ALPN_H2:
        sock.close()
        raise UpstreamConnectError(
            "alpn",
            f"{backend.id}: protocol = 'h2' but the backend's TLS did not select h2 via ALPN "
            f"(selected {selected or 'nothing'})",
        )
    return stream


def h2_connect(backends: Sequence[BackendPlan]) -> Connect:
    """The ``connect`` for ``H2Back``: ``Backend.id`` → its plan → a stream; errors typed."""
    plans = {b.id: b for b in backends}

    async def connect(backend: Backend) -> trio.abc.Stream:
        try:
            return await open_h2_backend_stream(plans[backend.id])
        except UpstreamError as exc:
            raise ConnectFailed(str(exc), kind=exc.kind) from None

    return connect
