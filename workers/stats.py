"""Plain integer counters a worker keeps per listener (no locks, no objects per event).

The heartbeat reads them; the metrics snapshot (gateway/metrics) is built from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ListenerStats:
    name: str
    connections_total: int = 0
    connections_active: int = 0
    requests_total: int = 0
    bytes_in_total: int = 0
    bytes_out_total: int = 0
    resets_total: int = 0
    no_backend_total: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    upstream_errors: dict[tuple[str, str], int] = field(default_factory=dict)

    def bytes_in(self, n: int) -> None:
        self.bytes_in_total += n

    def bytes_out(self, n: int) -> None:
        self.bytes_out_total += n

    def reset(self) -> None:
        self.resets_total += 1

    def no_backend(self) -> None:
        self.no_backend_total += 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def upstream_error(self, backend_id: str, kind: str) -> None:
        key = (backend_id, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1
