"""Raising this process's open-files limit at start (workers inherit it).

Owns: the one setrlimit(RLIMIT_NOFILE) call, made by the supervisor before it opens
sockets or starts workers, so every worker starts with soft = hard (the figure its
`max_inflight_connections = "auto"` is sized from, gateway/fd_budget.py). systemd and
most shells hand out soft 1024 / hard 524288: without this a worker runs out of
descriptors at about a thousand connections. Must never lower a limit.
"""

from __future__ import annotations

import resource
from pathlib import Path

import structlog

from gateway.fd_budget import DEFAULT_NR_OPEN, raised_soft_limit

log = structlog.get_logger("expressgateway.supervisor")


def _nr_open() -> int:
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return DEFAULT_NR_OPEN


def raise_nofile_limit() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = raised_soft_limit(soft, hard, infinity=resource.RLIM_INFINITY, nr_open=_nr_open())
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("nofile_limit_not_raised", soft=soft, hard=hard, error=str(exc))
            return soft
    log.info("nofile_limit", soft=target, hard=hard, raised_from=soft)
    return target
