"""The one error hierarchy of ExpressGateway.

Every error carries its meaning: a process exit code, an HTTP status hint, or a
protocol error code. OS errors are translated into these once, at the I/O boundary
(in workers/ and supervisor/); this module never performs I/O.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

# Process exit codes (sysexits-inspired, stable: systemd units and tests match on them).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # invalid configuration: nothing was started
EXIT_WORKER_BOOT = 3  # a worker could not boot (gunicorn's WORKER_BOOT_ERROR idea)
EXIT_UNAVAILABLE = 69  # a required facility (e.g. the kernel datapath) is missing


class GatewayError(Exception):
    """Base of every error raised on purpose by ExpressGateway."""

    exit_code: int = EXIT_FAILURE


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: where it is, what is wrong, what is allowed."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str = "") -> str:
        where = ""
        if self.line is not None:
            where = f" ({source}:{self.line})" if source else f" (line {self.line})"
        return f"{self.path}: {self.message}{where}"


class ConfigError(GatewayError):
    """The configuration is invalid; carries every problem found, not only the first."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render(self.source) for p in self.problems)


class WorkerBootError(GatewayError):
    """A worker (or a whole generation) failed to become ready."""

    exit_code = EXIT_WORKER_BOOT


class ControlError(GatewayError):
    """A control command was malformed or could not be carried out."""


class DatapathUnavailable(GatewayError):
    """A required kernel datapath feature is missing and `[kernel].required` is set."""

    exit_code = EXIT_UNAVAILABLE


class UpstreamError(GatewayError):
    """A backend could not serve a request; `status` is what the client gets."""

    status = 502

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


# OS errors that say this process (or host) ran out of something, not that a backend failed:
# descriptors (EMFILE per process, ENFILE per host), socket buffers or memory, local ports.
LOCAL_EXHAUSTION_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)


class LocalResourceExhausted(GatewayError):
    """The gateway itself ran out of descriptors (or buffers, memory, local ports) while
    serving a connection. Answered locally (HTTP 503) and counted; never a backend failure,
    so it must not feed passive health or eject a healthy backend."""

    status = 503
    kind = "fd_exhausted"


class UpstreamConnectError(UpstreamError):
    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504
