"""Connection ID -> backend: the bounded route table of a QUIC passthrough listener.

Owns the table decisions: a local LRU with idle expiry and a cap (each eviction counted),
in front of an optional store shared by every worker and generation (`SharedCidStore`,
a BPF LRU hash map in production). A route learned by one worker is written through to
the store; a worker that misses locally asks the store and adopts what it finds, unless
the entry has been idle past the timeout. Local hits refresh the store's timestamp at
most every `refresh_s`, so a busy connection costs one store write per interval, not
one per packet; a refresh that finds its entry gone (the kernel's LRU evicted it) puts
it back and counts it.

Routes name backends by `cid_record.backend_key`, never by list index. Time is `now`,
seconds on CLOCK_MONOTONIC (time.monotonic), the clock every process shares.
Must never: touch a socket or a file descriptor (the store does), or read a clock.
"""

from __future__ import annotations

from typing import Protocol

from gateway.udp_sessions import SessionTable


class SharedCidStore(Protocol):
    """The cross-process table: get/put by CID; failures are reported, never raised."""

    def get(self, cid: bytes) -> tuple[int, float] | None:
        """(backend key, last seen s) or None."""
        ...

    def put(self, cid: bytes, backend: int, now: float, *, must_exist: bool = False) -> bool:
        """Write the entry; False if it failed (or `must_exist` and it was gone)."""
        ...


class _Route:
    __slots__ = ("backend", "shared_at_s")

    def __init__(self, backend: int, shared_at_s: float) -> None:
        self.backend = backend
        self.shared_at_s = shared_at_s


class CidRoutes:
    """The routes one worker knows, backed by the shared store when there is one."""

    __slots__ = (
        "_local",
        "adopted_total",
        "idle_timeout_s",
        "refresh_s",
        "shared",
        "shared_lost_total",
        "store_errors_total",
    )

    def __init__(
        self,
        *,
        max_entries: int,
        idle_timeout_s: float,
        shared: SharedCidStore | None = None,
        refresh_s: float | None = None,
    ) -> None:
        self._local: SessionTable[bytes, _Route] = SessionTable(
            max_sessions=max_entries, idle_timeout_s=idle_timeout_s
        )
        self.idle_timeout_s = idle_timeout_s
        self.shared = shared
        # Refresh often enough that a route in use never looks idle to another worker.
        self.refresh_s = refresh_s if refresh_s is not None else min(1.0, idle_timeout_s / 4)
        self.adopted_total = 0  # routes another worker (or generation) learned
        self.shared_lost_total = 0  # routes the shared store had dropped under us
        self.store_errors_total = 0

    def __len__(self) -> int:
        return len(self._local)

    @property
    def evictions_total(self) -> int:
        return self._local.evictions_total

    @property
    def expirations_total(self) -> int:
        return self._local.expirations_total

    def lookup(self, cid: bytes, now: float) -> int | None:
        """The backend key of `cid`, or None when no worker knows it (or it went idle)."""
        route = self._local.get(cid, now)
        if route is not None:
            shared = self.shared
            if shared is not None and now - route.shared_at_s >= self.refresh_s:
                route.shared_at_s = now
                if not shared.put(cid, route.backend, now, must_exist=True):
                    self.shared_lost_total += 1
                    if not shared.put(cid, route.backend, now):
                        self.store_errors_total += 1
            return route.backend
        if self.shared is None:
            return None
        found = self.shared.get(cid)
        if found is None:
            return None
        backend, seen_s = found
        if now - seen_s >= self.idle_timeout_s:
            return None
        self.adopted_total += 1
        self._local.add(cid, _Route(backend, seen_s), now)
        return backend

    def learn(self, cid: bytes, backend: int, now: float) -> None:
        """Record that `cid` belongs to `backend` (here and in the shared store)."""
        route = self._local.get(cid, now)
        if route is None:
            self._local.add(cid, _Route(backend, now), now)
        elif route.backend == backend and now - route.shared_at_s < self.refresh_s:
            return
        else:
            route.backend = backend
            route.shared_at_s = now
        if self.shared is not None and not self.shared.put(cid, backend, now):
            self.store_errors_total += 1

    def expire(self, now: float) -> int:
        """Drop local routes idle past the timeout; how many went."""
        return len(self._local.pop_expired(now))

    def next_expiry_at(self) -> float | None:
        return self._local.next_expiry_at()
