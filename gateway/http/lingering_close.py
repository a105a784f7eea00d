"""Lingering close (RFC 9112 §9.6): when a server closes a connection whose client is still
sending, it first half-closes and reads on for a while, because a close with unread input
makes the kernel send a reset, and a reset can destroy the response still in flight.

Owns: whether a closing HTTP/1.1 connection lingers (``should_linger``) and the linger's
bounds as a small clock-injected state machine (``Linger``: a total time, an idle time
between reads, a byte budget; ``next_deadline`` in aioquic's manner), shared by every
HTTP/1.1 front. Must never do I/O, keep the bytes it counts, or read a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LingerLimits:
    """How long and how much a closing connection may still read (and discard).

    nginx's lingering_time / lingering_timeout are 30 s / 5 s; a proxy that answers floods
    needs less: an honest client stops sending within a round trip of reading its answer.
    """

    total_s: float = 5.0  # from the half-close to the close, whatever the client does
    idle_s: float = 2.0  # no byte for this long: the client has stopped, close now
    max_bytes: int = 16 * 1024 * 1024  # discarded input after which the close is abrupt


def should_linger(*, unread_input: bool, peer_closed: bool, upgraded: bool) -> bool:
    """Linger only when the client may still be sending: input left unread (a body cut short by
    an early answer or an error, a pipelined request), the client still open, no tunnel."""
    return unread_input and not peer_closed and not upgraded


class Linger:
    """One linger, from the half-close on; ``now`` values come from the caller's clock."""

    __slots__ = ("ends_at", "idle_at", "limits", "read_bytes", "started_at")

    def __init__(self, limits: LingerLimits, now: float) -> None:
        self.limits = limits
        self.started_at = now
        self.ends_at = now + limits.total_s
        self.idle_at = now + limits.idle_s
        self.read_bytes = 0

    def next_deadline(self) -> float:
        """When to give up waiting for the next read."""
        return min(self.ends_at, self.idle_at)

    def on_read(self, nbytes: int, now: float) -> bool:
        """Account one read; True to read on, False to close (EOF, byte budget or time spent)."""
        if nbytes <= 0:
            return False  # the client closed its side: nothing more can be lost
        self.read_bytes += nbytes
        self.idle_at = now + self.limits.idle_s
        return self.read_bytes <= self.limits.max_bytes and now < self.ends_at
