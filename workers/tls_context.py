"""The SSLContexts a worker uses: one to terminate TLS, one per backend TLS setting.

Owns the TLS policy in one place: TLS 1.2 and 1.3 only (1.3 only when `tls13_only`),
ECDHE + AEAD cipher suites for 1.2, no compression, no renegotiation, session tickets
allowed; for backends, certificate verification against `ca_path` (or the system
CAs) with a hostname check. Contexts are built once per worker and listener (or per
distinct backend setting), never per connection. Must never open sockets.
"""

from __future__ import annotations

import functools
import ssl

from gateway.config.schema import BackendTlsConfig, TlsConfig

# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only. TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _harden(ctx: ssl.SSLContext, *, tls13_only: bool) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls13_only else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """Terminating context for a `tls` listener; raises ssl.SSLError / OSError on bad files."""
    return certificate_context(tls.cert_path, tls.key_path, tls13_only=tls.tls13_only)


def certificate_context(cert_path: str, key_path: str, *, tls13_only: bool) -> ssl.SSLContext:
    """Terminating context serving one certificate chain (an h1s listener has one per
    certificate, workers/sni_contexts.py); raises ssl.SSLError / OSError on bad files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(ctx, tls13_only=tls13_only)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


@functools.lru_cache(maxsize=64)
def backend_context(tls: BackendTlsConfig, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """Client context towards backends; cached per distinct (frozen, hashable) setting and
    ALPN list (``("h2",)`` for HTTP/2 backends: contexts are never shared across lists)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_path)
    _harden(ctx, tls13_only=False)
    if not tls.verify:
        # Explicitly configured (and warned about at start by supervisor/preflight.py).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def backend_server_name(tls: BackendTlsConfig, host: str) -> str:
    """The name sent as SNI and checked against the backend's certificate."""
    return tls.server_name or host
