"""The TLS session tickets a `quic` listener issues when ``early_data`` is on (0-RTT).

Owns one worker's bounded, single-use ticket store handed to aioquic (its ticket handler
and fetcher): a ticket is taken out when a client resumes with it, so the same ticket's
early data cannot be replayed to this worker (RFC 8446 §8.1, single-use tickets); the
oldest tickets are forgotten past ``capacity``. Tickets are per worker process: a client
resuming on another worker gets a full handshake (no early data), never an error. Replays
across workers remain possible in principle, which is why the H3 front serves only safe
methods from early data. Must never do I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from aioquic.tls import SessionTicket

DEFAULT_CAPACITY = 10_000


class SessionTickets:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self._tickets[ticket.ticket] = ticket
        while len(self._tickets) > self.capacity:
            self._tickets.popitem(last=False)

    def take(self, label: bytes) -> SessionTicket | None:
        return self._tickets.pop(label, None)

    def __len__(self) -> int:
        return len(self._tickets)
