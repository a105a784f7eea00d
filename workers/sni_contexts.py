"""The SSLContexts of a TLS HTTP listener: one per certificate, switched by SNI.

Owns building them from the compiled plan (``ListenerTlsPlan``) once per worker and
listener — a new worker generation builds them again, so a reload serves rotated files —,
the ALPN list each offers, and the SNI callback that moves a handshake to the context of
the certificate serving the client's server name (``gateway.http.server_names`` decides
which). Also remembers, per handshaking task, the server name the client sent, since Python
exposes it to the callback only. Must never read the config, open sockets or log per
connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import trio

from gateway.config.plan import ListenerTlsPlan
from gateway.http.server_names import ServerNameTable
from workers.tls_context import certificate_context


def misdirect_table(plan: ListenerTlsPlan) -> ServerNameTable | None:
    """The name table a front checks each request's authority against (``is_misdirected``);
    None with a single certificate, where nothing can be misdirected and the check is skipped.
    """
    if len(plan.certificates) < 2:
        return None
    return ServerNameTable.from_names([c.server_names for c in plan.certificates])


class ListenerCertificates:
    """Every certificate context of one listener; ``default`` is the one handshakes start in."""

    def __init__(self, plan: ListenerTlsPlan, alpn: Sequence[str]) -> None:
        self.names = ServerNameTable.from_names([c.server_names for c in plan.certificates])
        self.contexts = [
            certificate_context(c.cert_path, c.key_path, tls13_only=plan.tls13_only)
            for c in plan.certificates
        ]
        for ctx in self.contexts:
            # Each context offers the same list: OpenSSL selects ALPN after the SNI callback,
            # with the callbacks of the context the handshake moved to.
            ctx.set_alpn_protocols(list(alpn))
        self.default = self.contexts[0]
        # The name each task's handshake asked for, from the callback until taken.
        self._seen: dict[trio.lowlevel.Task, str] = {}
        self.default.sni_callback = self._on_server_name

    def _on_server_name(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        """OpenSSL's servername callback, run inside the handshaking task's do_handshake."""
        if server_name is None:
            return
        self._seen[trio.lowlevel.current_task()] = server_name
        index = self.names.certificate_for(server_name)
        if index > 0:
            ssl_object.context = self.contexts[index]

    def take_server_name(self) -> str | None:
        """The SNI the current task's handshake carried (None: none); forgets it."""
        return self._seen.pop(trio.lowlevel.current_task(), None)
