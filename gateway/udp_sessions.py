"""The bounded session table of the UDP datagram proxy: key -> session, LRU, idle expiry.

Owns the bookkeeping decisions of a datagram listener: which session a datagram
belongs to, which session to evict when the table is full (the least recently used
one), and which sessions have been idle past the timeout. Activity in either
direction (a client datagram, a backend reply) refreshes a session.

Pure: time comes in as `now` (seconds on any monotonic clock, never going back).
It must never touch a socket, read a clock, start a task or close anything: it hands
evicted and expired sessions back to the caller, who ends them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(Generic[V]):
    __slots__ = ("last_seen_s", "value")

    def __init__(self, value: V, last_seen_s: float) -> None:
        self.value = value
        self.last_seen_s = last_seen_s


class SessionTable(Generic[K, V]):
    """At most `max_sessions` entries, ordered from least to most recently active."""

    __slots__ = (
        "_entries",
        "evictions_total",
        "expirations_total",
        "idle_timeout_s",
        "max_sessions",
    )

    def __init__(self, *, max_sessions: int, idle_timeout_s: float) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.evictions_total = 0
        self.expirations_total = 0
        # Insertion order is activity order: every touch moves the entry to the end, so
        # the front is both the LRU victim and the first session to expire.
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: K, now: float) -> V | None:
        """The session of `key`, refreshed as active at `now`; None if there is none."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._refresh(key, entry, now)
        return entry.value

    def touch(self, key: K, now: float) -> bool:
        """Mark `key` active at `now` (a reply went back); False if it has no session."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._refresh(key, entry, now)
        return True

    def add(self, key: K, value: V, now: float) -> list[tuple[K, V]]:
        """Insert a new session; return the sessions evicted to make room (LRU first)."""
        if key in self._entries:
            raise KeyError(f"session {key!r} already exists")
        evicted: list[tuple[K, V]] = []
        while len(self._entries) >= self.max_sessions:
            old_key, old = self._entries.popitem(last=False)
            evicted.append((old_key, old.value))
        self.evictions_total += len(evicted)
        self._entries[key] = _Entry(value, now)
        return evicted

    def evict_lru(self) -> tuple[K, V] | None:
        """Evict the least recently used session (the caller ran out of a resource)."""
        if not self._entries:
            return None
        key, entry = self._entries.popitem(last=False)
        self.evictions_total += 1
        return key, entry.value

    def discard(self, key: K, value: V | None = None) -> bool:
        """Remove `key` (only if it still maps to `value`, when given); True if removed."""
        entry = self._entries.get(key)
        if entry is None or (value is not None and entry.value is not value):
            return False
        del self._entries[key]
        return True

    def pop_expired(self, now: float) -> list[tuple[K, V]]:
        """Remove and return every session idle for at least the timeout at `now`."""
        expired: list[tuple[K, V]] = []
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            # The same sum as next_expiry_at(): waking at that instant must expire it.
            if entry.last_seen_s + self.idle_timeout_s > now:
                break
            del self._entries[key]
            expired.append((key, entry.value))
        self.expirations_total += len(expired)
        return expired

    def next_expiry_at(self) -> float | None:
        """When the least recently active session expires if nothing refreshes it."""
        for entry in self._entries.values():
            return entry.last_seen_s + self.idle_timeout_s
        return None

    def idle_for_s(self, key: K, now: float) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else now - entry.last_seen_s

    def keys(self) -> list[K]:
        """Keys from least to most recently active."""
        return list(self._entries)

    def _refresh(self, key: K, entry: _Entry[V], now: float) -> None:
        # Never move a session's activity backwards: the order must stay the time order.
        if now > entry.last_seen_s:
            entry.last_seen_s = now
        self._entries.move_to_end(key)
