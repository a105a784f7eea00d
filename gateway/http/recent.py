"""RecentSet: a bounded set of values that recently passed a check, so that values which repeat
(Host names, field names, Connection values) skip the check.

Owns: the bounds (emptied when ``max_items`` is reached; values longer than ``max_len`` are never
kept), so memory stays under ``max_items * max_len`` whatever clients send. Must never hold a
value its caller has not checked: only ``remember`` what passed.
"""

from __future__ import annotations


class RecentSet:
    def __init__(self, max_items: int, max_len: int) -> None:
        self._items: set[bytes] = set()
        self.max_items = max_items
        self.max_len = max_len

    def has(self, value: bytes) -> bool:
        return value in self._items

    def remember(self, value: bytes) -> None:
        if len(value) > self.max_len:
            return
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items.add(value)
