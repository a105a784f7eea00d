"""Find the line of each key path in TOML text, for error messages.

`tomllib` reports positions only for syntax errors, so this small line scanner maps
`listeners[1].backends[0].weight` to the line where that key is written. It is a
best-effort aid for humans: a path it cannot place simply has no line number.
"""

from __future__ import annotations

import re

_TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ARRAY = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(
    r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _segments(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in dotted.split(".")]


def locate_lines(text: str) -> dict[str, int]:
    """Map every key path written in `text` to its 1-based line number."""
    lines: dict[str, int] = {}
    array_counts: dict[str, int] = {}
    current = ""

    def resolve(segments: list[str], *, new_element: bool) -> str:
        path = ""
        for i, seg in enumerate(segments):
            path = f"{path}.{seg}" if path else seg
            last = i == len(segments) - 1
            if last and new_element:
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                path = f"{path}[{index}]"
            elif path in array_counts:
                path = f"{path}[{array_counts[path] - 1}]"
        return path

    for number, line in enumerate(text.splitlines(), start=1):
        if m := _ARRAY.match(line):
            current = resolve(_segments(m.group(1)), new_element=True)
            lines.setdefault(current, number)
        elif m := _TABLE.match(line):
            current = resolve(_segments(m.group(1)), new_element=False)
            lines.setdefault(current, number)
        elif m := _KEY.match(line):
            key = ".".join(_segments(m.group(1)))
            lines.setdefault(f"{current}.{key}" if current else key, number)
    return lines
