"""The list of config problems a validation pass collects, each with its key path and line.

Owns ``Collector``: add a problem (its line found from the key path, or from the array's
for an array element) and the common range check. Must never decide a rule itself.
"""

from __future__ import annotations

from gateway.errors import Problem


class Collector:
    def __init__(self, lines: dict[str, int]) -> None:
        self.problems: list[Problem] = []
        self.lines = lines

    def add(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        if line is None and path.endswith("]"):  # an array element: the array's line
            line = self.lines.get(path[: path.rindex("[")])
        self.problems.append(Problem(path, message, line))

    def in_range(
        self, path: str, value: int, low: int, high: int, *, zero_ok: bool = False
    ) -> None:
        if zero_ok and value == 0:
            return
        if not low <= value <= high:
            extra = " (or 0 to disable)" if zero_ok else ""
            self.add(path, f"must be {low}..{high}{extra}, got {value}")
