"""What a front adapter receives for one accepted client connection.

Owns the ClientConn record (the stream after any TLS handshake, the peer, the TLS facts a
front needs: SNI for the misdirected-request check, the negotiated ALPN) and the
FrontHandler signature every front adapter (H1, H2, H3) is registered under, and the
record of a request a multiplexed front ended before the core served it (refused, or reset
by the client). Must never read bytes itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from gateway.http.grpc_status import unserved_label
from gateway.http.model import RequestHead
from workers.http1.context import RequestRecord


@dataclass(slots=True)
class ClientConn:
    stream: trio.abc.Stream
    client_ip: str
    # "https" on TLS listeners, "http" otherwise: X-Forwarded-Proto and :scheme.
    scheme: bytes = b"http"
    # The server name the client asked for in its TLS ClientHello (None: none or cleartext).
    sni: str | None = None
    # The ALPN protocol negotiated ("h2", "http/1.1") or None.
    alpn: str | None = None
    # Bytes already read from the stream before the front took it (prior-knowledge sniffing).
    preread: bytes = b""


FrontHandler = Callable[[ClientConn], Awaitable[None]]


def unserved_record(
    listener: str,
    client_ip: str,
    front: str,
    head: RequestHead,
    started_at: float,
    status: int,
    kind: str,
) -> RequestRecord:
    """The access record of a request the front answered itself (``status``) or lost to a
    client reset (status 0) before the core served it."""
    return RequestRecord(
        listener=listener,
        method=head.method.decode("latin-1"),
        path=head.path.decode("latin-1"),
        status=status,
        bytes_in=0,
        bytes_out=0,
        duration_s=trio.current_time() - started_at,
        backend_id=None,
        client=client_ip,
        error_kind=kind,
        front=front,
        back="",
        grpc_status=unserved_label(head.headers, status),
    )
