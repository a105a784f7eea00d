"""Backend name resolution results, with failures cached too.

Owns when a backend's address must be (re)resolved and what to use meanwhile: a success
is used for `ttl_s` and then, while a refresh runs, still used (stale beats nothing); a
failure is remembered for `failure_ttl_s`, so a dead name costs one lookup per interval,
not one per datagram. The data path never waits for a lookup: it asks `address`, and
`wanted` tells the resolver task which names to look up now.

Pure: `now` is passed in. Must never resolve anything itself.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")


class ResolveCache(Generic[K, A]):
    __slots__ = (
        "_addr",
        "_fail_until",
        "_fresh_until",
        "_in_flight",
        "_pending",
        "failure_ttl_s",
        "ttl_s",
    )

    def __init__(self, *, ttl_s: float, failure_ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self._addr: dict[K, A] = {}
        self._fresh_until: dict[K, float] = {}
        self._fail_until: dict[K, float] = {}
        self._pending: set[K] = set()
        self._in_flight: set[K] = set()

    def address(self, key: K, now: float) -> A | None:
        """The address to use now (possibly stale), or None; asks for a lookup if due."""
        if (
            self._fresh_until.get(key, -1.0) <= now
            and self._fail_until.get(key, -1.0) <= now
            and key not in self._in_flight
        ):
            self._pending.add(key)
        return self._addr.get(key)

    def failing(self, key: K, now: float) -> bool:
        """True while the last lookup of `key` failed less than failure_ttl_s ago."""
        return self._fail_until.get(key, -1.0) > now

    def wanted(self) -> list[K]:
        """Keys to look up now (each handed out once until resolved or failed)."""
        keys = list(self._pending)
        self._pending.clear()
        self._in_flight.update(keys)
        return keys

    def resolved(self, key: K, addr: A, now: float) -> None:
        self._addr[key] = addr
        self._fresh_until[key] = now + self.ttl_s
        self._fail_until.pop(key, None)
        self._in_flight.discard(key)

    def failed(self, key: K, now: float) -> None:
        """Keep a stale address if there is one; remember the failure either way."""
        self._fail_until[key] = now + self.failure_ttl_s
        self._in_flight.discard(key)
