"""Address validation of a `quic` listener's new connections (RFC 9000 §8.1): whether an
Initial that would open a connection is served, answered with a Retry, or dropped.

Owns the decision the endpoint (workers/quic_listener.py) asks for before opening a
connection, the way aioquic's own asyncio server does it: an Initial without a token, when
``retry`` requires validation (``always``, or ``above_rate`` while the worker's listener
takes at least ``retry_new_connections_per_s`` new connections a second), gets a Retry
whose token (gateway/quic_retry_token.py) binds the client address and original DCID, and
whose source connection ID is one the worker mints (so the answering Initial comes back to
this worker, steered or handed off by that ID). An Initial carrying a token (aioquic
servers send no NEW_TOKEN, so every token is a Retry's) is served only if the token is
valid; a forged, expired or foreign one is dropped without an answer (RFC 9000 §8.1.3
allows either; silence reflects nothing). With ``retry = "never"`` tokens are ignored.
Must never keep state per client (that is what Retry avoids) nor do I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from aioquic.quic.packet import QuicHeader, encode_quic_retry

from gateway.quic_retry_token import NewConnectionRate, RetryMode, RetryTokens, retry_required

INVALID_TOKEN_REASON = "quic_invalid_token"


@dataclass(frozen=True, slots=True)
class Admit:
    """Open the connection: aioquic must echo these in its transport parameters."""

    original_dcid: bytes
    retry_scid: bytes | None


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer with this Retry packet and open nothing."""

    datagram: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


Verdict = Admit | Reply | Drop


class AddressValidation:
    def __init__(
        self,
        mode: RetryMode,
        threshold_per_s: int,
        cid_factory: Callable[[], bytes],
        tokens: RetryTokens | None = None,
    ) -> None:
        self.mode = mode
        self.threshold_per_s = threshold_per_s
        self.cid_factory = cid_factory
        self.tokens = tokens if tokens is not None else RetryTokens(os.urandom(32))
        self.rate = NewConnectionRate()
        self.retries_sent = 0

    def check(self, header: QuicHeader, addr: tuple[object, ...], now: float) -> Verdict:
        """For a long-header Initial of at least 1200 bytes that names no connection."""
        dcid = header.destination_cid
        if self.mode == "never":
            return Admit(dcid, None)
        ip, port = str(addr[0]), int(addr[1])  # type: ignore[call-overload]
        if header.token:
            original = self.tokens.verify(header.token, ip, port, dcid, now)
            if original is None:
                return Drop(INVALID_TOKEN_REASON)
            return Admit(original, dcid)
        if not retry_required(self.mode, self.rate, self.threshold_per_s, now):
            return Admit(dcid, None)
        assert header.version is not None  # an Initial is a long header
        scid = self.cid_factory()
        self.retries_sent += 1
        return Reply(
            encode_quic_retry(
                version=header.version,
                source_cid=scid,
                destination_cid=header.source_cid,
                original_destination_cid=dcid,
                retry_token=self.tokens.mint(ip, port, dcid, scid, now),
            )
        )

    def opened(self, now: float) -> None:
        """A connection was opened (counted toward ``above_rate``)."""
        self.rate.note(now)
