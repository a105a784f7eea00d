"""What a front adapter receives for one accepted client connection.

Owns the ClientConn record (the stream after any TLS handshake, the peer, the TLS facts a
front needs: SNI for the misdirected-request check, the negotiated ALPN) and the
FrontHandler signature every front adapter (H1, H2, H3) is registered under. Must never
read bytes itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio


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
