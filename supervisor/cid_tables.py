"""The shared tables of quic_passthrough listeners, kept by the supervisor.

Owns two BPF maps per quic_passthrough listener (kernel/cid_map.py) — the connection-ID
routes and the flows' local ports — created at start and kept across reloads: the tables
outlive every worker generation, so connections keep their backend (and the address the
backend sees) through a reload. Every worker inherits their fds. A reload that
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
from kernel.cid_map import copy_entries, create_table
from kernel.libbpf import BpfError, LibbpfUnavailable

log = structlog.get_logger("expressgateway.supervisor")
KINDS = ("routes", "flows")  # the order of the fds a worker gets


class CidTables:
    def __init__(self) -> None:
        # listener -> ([routes fd, flows fd], max entries)
        self._maps: dict[str, tuple[list[int], int]] = {}
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
            fds: list[int] = []
            try:
                for kind in KINDS:
                    fds.append(create_table(kind, size))
            except (BpfError, LibbpfUnavailable) as exc:
                for fd in fds:
                    os.close(fd)
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
                copied = [
                    copy_entries(kind, old, new, size)
                    for kind, old, new in zip(KINDS, held[0], fds, strict=True)
                ]
                for fd in held[0]:
                    os.close(fd)
                log.info("quic_cid_table_resized", listener=name, routes=size, copied=copied)
            else:
                log.info("quic_cid_table_created", listener=name, routes=size, fds=fds)
            self._maps[name] = (fds, size)

    def release_unused(self, plan: GatewayPlan) -> None:
        """Close the maps of listeners `plan` no longer has (after a successful reload)."""
        keep = {lst.name for lst in plan.listeners if lst.quic_passthrough is not None}
        for name in list(self._maps):
            if name not in keep:
                for fd in self._maps.pop(name)[0]:
                    os.close(fd)

    def fds(self) -> dict[str, list[int]]:
        return {name: list(fds) for name, (fds, _size) in self._maps.items()}

    def close_all(self) -> None:
        for fds, _size in self._maps.values():
            for fd in fds:
                os.close(fd)
        self._maps.clear()
