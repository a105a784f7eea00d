"""Which certificate of a TLS HTTP listener serves a host name (SNI or Host / :authority).

Owns the name table of one listener: exact names and ``*.`` wildcards, each mapped to the
index of a certificate in the listener's plan (index 0, ``DEFAULT_CERTIFICATE``, is the
default: the top-level ``[listeners.tls]`` certificate). An exact name wins over a wildcard;
a wildcard stands for exactly one leftmost label (RFC 6125 §6.4.3: ``*.example.com`` matches
``a.example.com``, neither ``example.com`` nor ``a.b.example.com``). Names compare
case-insensitively and without a trailing dot. Must never read certificate files or decide
what a mismatch means (``misdirected`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

DEFAULT_CERTIFICATE: Final = 0


def normalise_name(name: str) -> str:
    """The form names are stored and looked up in: lowercase, no trailing dot."""
    return name.lower().rstrip(".")


class ServerNameTable:
    """Exact names and wildcard suffixes -> certificate index; built once per listener."""

    def __init__(self, exact: dict[str, int], wildcard: dict[str, int], count: int) -> None:
        self.exact = exact
        # "*.example.com" is stored under "example.com": the name minus its first label.
        self.wildcard = wildcard
        self.count = count  # certificates in the listener, the default included

    @staticmethod
    def from_names(names_per_certificate: Sequence[Sequence[str]]) -> ServerNameTable:
        """``names_per_certificate[i]``: the server names of certificate ``i`` (0 = default).

        Validation refuses a name claimed twice; should one slip through, the first claim
        stays (the table never depends on dict ordering surprises)."""
        exact: dict[str, int] = {}
        wildcard: dict[str, int] = {}
        for index, names in enumerate(names_per_certificate):
            for raw in names:
                name = normalise_name(raw)
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], index)
                else:
                    exact.setdefault(name, index)
        return ServerNameTable(exact, wildcard, len(names_per_certificate))

    def certificate_for(self, name: str) -> int:
        """The certificate that serves ``name``; -1 when no certificate names it."""
        key = normalise_name(name)
        index = self.exact.get(key)
        if index is not None:
            return index
        dot = key.find(".")
        if dot > 0:
            index = self.wildcard.get(key[dot + 1 :])
            if index is not None:
                return index
        return -1

    def certificate_for_sni(self, sni: str | None) -> int:
        """The certificate a handshake with this SNI gets: the named one, else the default."""
        if sni is None:
            return DEFAULT_CERTIFICATE
        index = self.certificate_for(sni)
        return DEFAULT_CERTIFICATE if index < 0 else index
