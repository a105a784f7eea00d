"""Connection admission: the per-IP cap and the in-flight cap of one worker.

Pure counters: `admit` decides, `release` undoes. The caps are per worker process,
applied as configured (not divided): with W workers the gateway-wide ceiling is
W x cap, as conf/README.md §8 documents. IPv6 clients are counted per network prefix
(`/64` by default): one host is handed a whole /64 and may pick any address in it, so
keying by the full address would let it open a fresh cap's worth from each.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


def client_key(ip: str, ipv6_prefix: int) -> str:
    """The identity a per-IP cap counts: the IPv4 address, or the IPv6 address's prefix."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip  # not an address we can parse (never from a real socket): count it as is
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    if ipv6_prefix >= 128:
        return str(addr)
    net = ipaddress.IPv6Network((int(addr), ipv6_prefix), strict=False)
    return str(net)


@dataclass(slots=True)
class ConnectionGate:
    per_ip_cap: int
    inflight_cap: int
    ipv6_prefix: int = 64
    inflight: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)

    def admit(self, ip: str) -> str | None:
        """Admit a connection from `ip`; return None, or the rejection reason."""
        if self.inflight >= self.inflight_cap:
            return "inflight_cap"
        key = client_key(ip, self.ipv6_prefix)
        count = self.per_ip.get(key, 0)
        if count >= self.per_ip_cap:
            return "per_ip_cap"
        self.per_ip[key] = count + 1
        self.inflight += 1
        return None

    def release(self, ip: str) -> None:
        key = client_key(ip, self.ipv6_prefix)
        count = self.per_ip.get(key, 0) - 1
        if count <= 0:
            self.per_ip.pop(key, None)
        else:
            self.per_ip[key] = count
        self.inflight -= 1
