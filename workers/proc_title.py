"""A process's command line, rewritten in place (what `ps` and /proc/PID/cmdline show).

Owns `set_argv`: a worker forked from the zygote inherits the zygote's command line; it
writes its own worker argv (NUL-separated, as exec would have) over the kernel's argument
area, found through /proc/self/stat (arg_start, arg_end). Operators and tests find a worker
by its command line whichever way it started. The zygote reserves the room (its
`--title-room` argument); a longer argv is cut at the room's end (never past it).
"""

from __future__ import annotations

import ctypes


def _arg_area() -> tuple[int, int]:
    with open("/proc/self/stat", "rb") as fh:
        stat = fh.read()
    # Fields after the command name (in parentheses, which may hold spaces): field 48 is
    # arg_start, 49 arg_end (proc(5)); index 0 below is field 3.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[45]), int(fields[46])


def set_argv(argv: list[str]) -> bool:
    """Show `argv` as this process's command line; False if the area could not be found."""
    try:
        start, end = _arg_area()
    except (OSError, ValueError, IndexError):
        return False
    if start <= 0 or end <= start:
        return False
    room = end - start
    data = b"\0".join(a.encode() for a in argv) + b"\0"
    data = data[: room - 1] + b"\0" if len(data) > room else data
    ctypes.memmove(start, data + b"\0" * (room - len(data)), room)
    return True
