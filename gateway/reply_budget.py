"""The reply byte budget of a UDP session: the proxy never amplifies beyond a factor.

A client address is not proven by UDP: a forged source turns a proxy whose backend
answers big into a reflector. A session may send the client at most `factor` times the
bytes it received from it, counted on the wire (payload plus `DATAGRAM_OVERHEAD_BYTES`
of IPv4 + UDP headers a datagram, the bandwidth an attack is measured in). Replies over
budget are dropped (and counted by the caller); the budget grows as the client sends.
RFC 9000 §8.1 bounds a QUIC server the same way (factor 3) before address validation.

Pure counters; must never read a clock or touch a socket.
"""

from __future__ import annotations

DATAGRAM_OVERHEAD_BYTES = 28  # IPv4 (20) + UDP (8); IPv6 headers are larger on both sides


class ReplyBudget:
    __slots__ = ("factor", "received_bytes", "sent_bytes")

    def __init__(self, factor: int) -> None:
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor
        self.received_bytes = 0
        self.sent_bytes = 0

    def received(self, payload_bytes: int) -> None:
        self.received_bytes += payload_bytes + DATAGRAM_OVERHEAD_BYTES

    def try_send(self, payload_bytes: int) -> bool:
        """Spend the budget for one reply; False (nothing spent) if it would exceed it."""
        cost = payload_bytes + DATAGRAM_OVERHEAD_BYTES
        if self.sent_bytes + cost > self.factor * self.received_bytes:
            return False
        self.sent_bytes += cost
        return True
