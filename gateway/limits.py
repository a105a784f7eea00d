"""Connection admission: the per-IP cap and the in-flight cap of one worker.

Pure counters: `admit` decides, `release` undoes. The caps are per worker process,
applied as configured (not divided): with W workers the gateway-wide ceiling is
W x cap, as conf/README.md §8 documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ConnectionGate:
    per_ip_cap: int
    inflight_cap: int
    inflight: int = 0
    per_ip: dict[str, int] = field(default_factory=dict)

    def admit(self, ip: str) -> str | None:
        """Admit a connection from `ip`; return None, or the rejection reason."""
        if self.inflight >= self.inflight_cap:
            return "inflight_cap"
        count = self.per_ip.get(ip, 0)
        if count >= self.per_ip_cap:
            return "per_ip_cap"
        self.per_ip[ip] = count + 1
        self.inflight += 1
        return None

    def release(self, ip: str) -> None:
        count = self.per_ip.get(ip, 0) - 1
        if count <= 0:
            self.per_ip.pop(ip, None)
        else:
            self.per_ip[ip] = count
        self.inflight -= 1
