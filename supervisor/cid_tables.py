"""The shared connection-ID tables of quic_passthrough listeners, kept by the supervisor.

Owns one BPF map per quic_passthrough listener (kernel/cid_map.py), created at start and
kept across reloads — the table outlives every worker generation, so connections keep
their backend through a reload — and its fd, which every worker inherits. A reload that
changes a listener's `max_routes` gets a new map with the live routes copied over; a
listener that is gone has its map closed (workers of the old generation hold their own
copies of the fd until they exit). Where BPF maps cannot be created (no libbpf, no
privilege) it logs `quic_cid_table_unshared` once per listener and passes no fd: each
worker then keeps only its own table.
Must never: fail a start or a reload because a map cannot be created.
"""

from __future__ import annotations

import os

import structlog

from gateway.config.plan import GatewayPlan
from kernel.cid_map import copy_entries, create_cid_map
from kernel.libbpf import BpfError, LibbpfUnavailable

log = structlog.get_logger("expressgateway.supervisor")


class CidTables:
    def __init__(self) -> None:
        self._maps: dict[str, tuple[int, int]] = {}  # listener -> (fd, max entries)
        self._warned: set[str] = set()

    def ensure(self, plan: GatewayPlan) -> None:
        wanted: dict[str, int] = {
            lst.name: lst.quic_passthrough.max_routes
            for lst in plan.listeners
            if lst.quic_passthrough is not None
        }
        for name, size in wanted.items():
            held = self._maps.get(name)
            if held is not None and held[1] == size:
                continue
            try:
                fd = create_cid_map(size)
            except (BpfError, LibbpfUnavailable) as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning(
                        "quic_cid_table_unshared",
                        listener=name,
                        error=str(exc).splitlines()[0],
                        effect="each worker routes only the connection IDs it learned itself",
                    )
                continue
            if held is not None:
                copied = copy_entries(held[0], fd, size)
                os.close(held[0])
                log.info("quic_cid_table_resized", listener=name, routes=size, copied=copied)
            else:
                log.info("quic_cid_table_created", listener=name, routes=size, fd=fd)
            self._maps[name] = (fd, size)

    def release_unused(self, plan: GatewayPlan) -> None:
        """Close the maps of listeners `plan` no longer has (after a successful reload)."""
        keep = {lst.name for lst in plan.listeners if lst.quic_passthrough is not None}
        for name in list(self._maps):
            if name not in keep:
                os.close(self._maps.pop(name)[0])

    def fds(self) -> dict[str, int]:
        return {name: fd for name, (fd, _size) in self._maps.items()}

    def close_all(self) -> None:
        for fd, _size in self._maps.values():
            os.close(fd)
        self._maps.clear()
