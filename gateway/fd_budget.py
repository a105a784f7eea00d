"""The file-descriptor budget of a process: the soft limit to ask for, and the
in-flight connection cap the descriptors allow.

Owns: how far the soft RLIMIT_NOFILE is raised at start (to the hard limit), what one
client connection costs in descriptors per listener protocol, and the value that
`runtime.max_inflight_connections = "auto"` resolves to in a worker.
Must never: call getrlimit/setrlimit or read /proc (the supervisor and workers do, and
pass the figures in).
"""

from __future__ import annotations

from collections.abc import Iterable

# Descriptors one client connection holds at its peak, by listener protocol:
# tcp: client + backend sockets + one splice pipe (two fds) per direction;
# tls: client + backend (the stream relay copies through user space, no pipe);
# h1: client + one upstream connection (pooled upstreams are counted in the reserve).
FDS_PER_CONNECTION = {"tcp": 6, "tls": 2, "h1": 2, "h1s": 2}
# The worker's own descriptors: listening sockets, control channel, epoll, trio's wakeup
# pipe, log streams, plus slack for DNS lookups and short-lived sockets.
WORKER_RESERVED_FDS = 64
# The ceiling "auto" never exceeds (the fixed default before it was derived).
AUTO_INFLIGHT_CEILING = 65_536
AUTO_INFLIGHT_FLOOR = 1
# Used when the hard limit is RLIM_INFINITY: the kernel's default fs.nr_open.
DEFAULT_NR_OPEN = 1 << 20


def raised_soft_limit(
    soft: int, hard: int, *, infinity: int, nr_open: int = DEFAULT_NR_OPEN
) -> int:
    """The soft limit to set: the hard limit (RLIMIT_NOFILE cannot exceed fs.nr_open, so an
    unlimited hard limit means nr_open); never lower than the current soft limit."""
    target = nr_open if hard == infinity else hard
    if soft == infinity:
        return soft
    return max(soft, target)


def auto_inflight_cap(
    nofile: int, protocols: Iterable[str], *, pooled_upstream_fds: int = 0
) -> int:
    """Connections one worker can hold open without running out of descriptors.

    The most expensive stream listener sets the per-connection cost; the reserve covers the
    worker itself and every idle pooled upstream connection it may keep.
    """
    costs = [FDS_PER_CONNECTION[p] for p in protocols if p in FDS_PER_CONNECTION]
    per_connection = max(costs, default=2)
    usable = nofile - WORKER_RESERVED_FDS - pooled_upstream_fds
    return max(AUTO_INFLIGHT_FLOOR, min(AUTO_INFLIGHT_CEILING, usable // per_connection))
