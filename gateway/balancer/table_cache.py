"""A tiny LRU of lookup tables keyed by the eligible set.

Owns the rule "rebuild a hash table only when the eligible set changes", with a
few recent sets kept so a backend flapping in and out of health does not force a
rebuild on every flip. It must never build a table itself: the caller passes the
builder.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class TableCache(Generic[T]):
    """Holds up to `capacity` tables, most recently used last."""

    __slots__ = ("_build", "_capacity", "_last", "_last_key", "_tables", "builds")

    def __init__(self, build: Callable[[tuple[int, ...]], T], capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError("table cache capacity must be >= 1")
        self._build = build
        self._capacity = capacity
        self._tables: OrderedDict[tuple[int, ...], T] = OrderedDict()
        self._last_key: tuple[int, ...] | None = None
        self._last: T | None = None
        self.builds = 0  # how many tables were built (a figure for tests and metrics)

    def get(self, eligible: Sequence[int]) -> T:
        key = tuple(eligible)
        if key == self._last_key and self._last is not None:
            return self._last
        table = self._tables.get(key)
        if table is None:
            table = self._build(key)
            self.builds += 1
            self._tables[key] = table
            if len(self._tables) > self._capacity:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        self._last_key = key
        self._last = table
        return table
