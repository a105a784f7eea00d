"""When a failed attempt may go to another backend, and what it says about the backend.

Owns the retry rule of the general proxy core and the passive-health outcome of a failed
attempt: a request nothing of which was processed (connect failure, REFUSED_STREAM, a
GOAWAY past its stream) may go elsewhere if its body was not consumed; one a reused
connection lost before any response byte only if it is idempotent and bodiless; nothing
after request bytes were delivered or a response began. Must never perform I/O.
"""

from __future__ import annotations

from typing import Final

IDEMPOTENT_METHODS: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))

# How an attempt failed, as far as retrying goes.
NOT_PROCESSED: Final = 0  # nothing reached the backend's application
MAYBE_PROCESSED: Final = 1  # a reused connection died before any response byte
PROCESSED: Final = 2  # anything else: request bytes delivered, or a response began

# Failure kinds that say nothing about the backend's health (a GOAWAY past the stream is
# what a backend's graceful restart looks like).
_NOT_THE_BACKENDS: Final = frozenset(
    (
        "body_too_large",
        "body_timeout",
        "total_timeout",
        "aborted",
        "retry_stale",
        "upstream_goaway",
        "fd_exhausted",
    )
)


def may_retry(
    how: int,
    *,
    method: bytes,
    body_started: bool,
    body_empty: bool,
    response_started: bool,
    attempt: int,
    max_attempts: int,
) -> bool:
    if attempt >= max_attempts or response_started or body_started:
        return False
    if how == NOT_PROCESSED:
        return True
    if how == MAYBE_PROCESSED:
        return body_empty and method in IDEMPOTENT_METHODS
    return False


def failure_outcome(kind: str, status: int) -> tuple[bool, str]:
    """(ok, kind) for passive health: client-side failures (any 4xx: a malformed, oversized or
    too slow request) count as neither."""
    if status < 500 or kind.startswith("client") or kind in _NOT_THE_BACKENDS:
        return (True, "aborted")
    return (False, kind)


def status_outcome(status: int) -> tuple[bool, str]:
    ok = status < 500
    return (ok, "ok" if ok else "status_5xx")
