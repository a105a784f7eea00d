"""Address validation tokens of `quic` listeners (RFC 9000 §8.1.2 Retry), and the rate that
decides when a listener asks for one.

Owns the token a Retry packet carries: stateless, so a flood of spoofed Initials costs the
gateway no connection state, only one small Retry each (smaller than the Initial: no
amplification). The token binds the client address (IP and port) the Retry was sent to,
the client's original destination connection ID (which the server must echo in its
transport parameters), the Retry's source connection ID (the client must address its next
Initial to it) and the time it was issued; an HMAC-SHA256 under a key drawn per process
(a token is only ever checked by the worker that minted it: the Retry's source ID names
that worker, gateway/quic_cid.py) authenticates all of it. A token is valid for
``lifetime_s`` (clients answer a Retry at once, RFC 9000 §8.1.4).

Layout: ``version (1) | issued_ms (8) | len (1) | original DCID | mac (16)``, the MAC over
the first part plus the address and the Retry source ID (not carried: the verifier knows
them).

Also owns ``NewConnectionRate``: new connections per second of one worker's listener
(a sliding estimate over two one-second windows), which ``retry = "above_rate"`` compares
with its threshold. Pure: key and clock are passed in; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import struct
from typing import Literal

RetryMode = Literal["always", "never", "above_rate"]
RETRY_MODES: tuple[RetryMode, ...] = ("always", "never", "above_rate")

TOKEN_VERSION = 1
TOKEN_LIFETIME_S = 10.0
KEY_BYTES = 32
_MAC_BYTES = 16
_HEAD = struct.Struct("!BQB")  # version, issued_ms, len(original DCID)


def _address(ip: str, port: int) -> bytes:
    return ipaddress.ip_address(ip).packed + port.to_bytes(2, "big")


class RetryTokens:
    def __init__(self, key: bytes, lifetime_s: float = TOKEN_LIFETIME_S) -> None:
        if len(key) < 16:
            raise ValueError("a retry token key needs at least 16 bytes")
        self._key = key
        self.lifetime_s = lifetime_s

    def _mac(self, signed: bytes, ip: str, port: int, retry_scid: bytes) -> bytes:
        msg = signed + _address(ip, port) + bytes([len(retry_scid)]) + retry_scid
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:_MAC_BYTES]

    def mint(
        self, ip: str, port: int, original_dcid: bytes, retry_scid: bytes, now: float
    ) -> bytes:
        """The token for a Retry from ``retry_scid`` to the client at ``ip``:``port`` whose
        first Initial was addressed to ``original_dcid``; ``now`` in seconds."""
        issued_ms = max(0, int(now * 1000))
        signed = _HEAD.pack(TOKEN_VERSION, issued_ms, len(original_dcid)) + original_dcid
        return signed + self._mac(signed, ip, port, retry_scid)

    def verify(self, token: bytes, ip: str, port: int, dcid: bytes, now: float) -> bytes | None:
        """The original DCID a valid token carries; None when the token is malformed, forged,
        minted for another address or another Retry source ID (``dcid``: where the client's
        Initial is addressed), or expired."""
        if len(token) < _HEAD.size + _MAC_BYTES:
            return None
        version, issued_ms, odcid_len = _HEAD.unpack_from(token)
        end = _HEAD.size + odcid_len
        if version != TOKEN_VERSION or len(token) != end + _MAC_BYTES:
            return None
        try:
            expected = self._mac(token[:end], ip, port, dcid)
        except ValueError:  # not an IP literal
            return None
        if not hmac.compare_digest(expected, token[end:]):
            return None
        age_s = now - issued_ms / 1000
        if not -1.0 <= age_s <= self.lifetime_s:  # a second of rounding back is tolerated
            return None
        return token[_HEAD.size : end]


class NewConnectionRate:
    """New connections per second, estimated over the current one-second window and the
    share of the previous one still inside the last second."""

    def __init__(self) -> None:
        self._window = -1
        self._current = 0
        self._previous = 0

    def _roll(self, now: float) -> float:
        window = math.floor(now)
        if window != self._window:
            self._previous = self._current if window == self._window + 1 else 0
            self._current = 0
            self._window = window
        return now - window

    def note(self, now: float) -> None:
        self._roll(now)
        self._current += 1

    def per_s(self, now: float) -> float:
        into = self._roll(now)
        return self._current + self._previous * (1.0 - into)


def retry_required(mode: RetryMode, rate: NewConnectionRate, threshold: int, now: float) -> bool:
    """Whether a new connection must first prove its address with a Retry round trip."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return rate.per_s(now) >= threshold
