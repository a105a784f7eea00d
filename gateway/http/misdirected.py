"""Is a request on a TLS connection meant for a certificate the connection did not negotiate?

Owns the 421 decision (RFC 9110 §15.5.20, RFC 9113 §9.1.2): a client may reuse a connection
for another host (HTTP/2 connection coalescing, or a plain misuse) only when the certificate
the connection presented also serves that host here. When the request's authority names a
host that this listener serves with a *different* certificate, the request is misdirected and
gets 421 Misdirected Request, so the client retries on a connection of its own. A host that
no certificate names (an IP literal, an unknown name) is not misdirected: the default
certificate serves whatever is left and routing is not this module's business. Must never
do I/O; every front (H1 now, H2 and H3 next) calls the same function.
"""

from __future__ import annotations

from gateway.http.server_names import ServerNameTable

_OPEN_BRACKET = 0x5B


def authority_host(authority: bytes) -> str:
    """The host part of Host / :authority (port dropped), as text for the name table."""
    if not authority or authority[0] == _OPEN_BRACKET:
        return ""  # IPv6 literal (or nothing): never a certificate's server name
    colon = authority.rfind(b":")
    host = authority[:colon] if colon >= 0 else authority
    return host.decode("latin-1")


def is_misdirected(table: ServerNameTable, connection_certificate: int, authority: bytes) -> bool:
    """True when ``authority``'s host is served by another certificate than the connection's.

    ``connection_certificate``: the index the handshake chose
    (``ServerNameTable.certificate_for_sni``). ``authority``: the request's Host (or
    absolute-form authority, or ``:authority``) as admitted.
    """
    if table.count < 2:
        return False
    host = authority_host(authority)
    if not host:
        return False
    served_by = table.certificate_for(host)
    return served_by >= 0 and served_by != connection_certificate
