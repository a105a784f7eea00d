"""QUIC-LB plaintext server IDs: routing a connection ID without any table.

Owns `QuicLbDecoder`, the unencrypted ("plaintext") algorithm of QUIC-LB
(draft-ietf-quic-load-balancers §5.2): a server that shares the load balancer's
configuration mints connection IDs whose first octet carries the config ID in its
three high bits (§2.3) and whose bytes at `server_id_offset` (1 in the draft) are its
server ID. Config ID 0b111 marks an unroutable CID (§3). A CID that does not decode —
other config ID, too short, unknown server ID — returns None and the caller falls back
to its table.

Must never: guess a backend for a CID that does not decode exactly, or hold state that
changes per packet.
"""

from __future__ import annotations

from collections.abc import Mapping

UNROUTABLE_CONFIG_ID = 0b111


class QuicLbDecoder:
    """server ID bytes -> backend index, for one listener's QUIC-LB configuration."""

    __slots__ = ("config_id", "server_id_len", "server_id_offset", "servers")

    def __init__(
        self,
        *,
        config_id: int,
        server_id_len: int,
        server_id_offset: int,
        servers: Mapping[bytes, int],
    ) -> None:
        if not 0 <= config_id < UNROUTABLE_CONFIG_ID:
            raise ValueError(f"config_id must be 0..6, got {config_id}")
        if not 1 <= server_id_len <= 15:
            raise ValueError(f"server_id_len must be 1..15, got {server_id_len}")
        if not 1 <= server_id_offset <= 19:
            raise ValueError(f"server_id_offset must be 1..19, got {server_id_offset}")
        for sid in servers:
            if len(sid) != server_id_len:
                raise ValueError(f"server ID {sid.hex()} is not {server_id_len} bytes")
        self.config_id = config_id
        self.server_id_len = server_id_len
        self.server_id_offset = server_id_offset
        self.servers = dict(servers)

    def decode(self, cid: bytes) -> int | None:
        """The backend index named by `cid`, or None when it carries no known server ID."""
        end = self.server_id_offset + self.server_id_len
        if len(cid) < end or cid[0] >> 5 != self.config_id:
            return None
        return self.servers.get(cid[self.server_id_offset : end])

    def mint(self, server_id: bytes, nonce: bytes) -> bytes:
        """A CID this decoder routes to `server_id` (what a QUIC-LB server issues); the
        first octet's low five bits and the bytes between it and the ID come from nonce."""
        if len(server_id) != self.server_id_len:
            raise ValueError(f"server ID must be {self.server_id_len} bytes")
        pad = self.server_id_offset - 1
        if len(nonce) < 1 + pad:
            raise ValueError("nonce too short for the first octet and the offset")
        first = (self.config_id << 5) | (nonce[0] & 0x1F)
        return bytes([first]) + nonce[1 : 1 + pad] + server_id + nonce[1 + pad :]
