"""Messages between the supervisor and the worker template (the zygote), JSON-encoded.

One message per datagram of a SOCK_SEQPACKET socketpair. The supervisor sends a request
(`ForkRequest`, whose fds travel alongside by SCM_RIGHTS, in `target_fds` order, or
`CheckRequest`); the zygote answers each with one reply. It announces itself once with
`ReadyReport` when its imports are done. Pure: bytes in, messages out.
"""

from __future__ import annotations

import msgspec

# SCM_MAX_FD: the kernel refuses more fds than this in one message. A worker that needs
# more (hundreds of listeners) is spawned as a fresh interpreter instead.
MAX_FDS = 253


class ForkRequest(msgspec.Struct, tag="fork", frozen=True):
    """Fork one worker. Its fds arrive in this order and get these numbers; its control
    socket is `control_fd` (one of them)."""

    target_fds: list[int]
    control_fd: int
    parent_pid: int
    log_format: str


class CheckRequest(msgspec.Struct, tag="check", frozen=True):
    """Has any imported module's file changed on disk since the zygote imported it?"""


class ForkReply(msgspec.Struct, frozen=True):
    pid: int  # the worker's pid (0 on error); it is the supervisor's child
    error: str = ""


class StaleReply(msgspec.Struct, frozen=True):
    changed: str = ""  # the first module file found changed ("" = the zygote is current)


class ReadyReport(msgspec.Struct, frozen=True):
    pid: int
    modules: int  # modules imported
    import_cpu_s: float  # CPU it used from exec to ready (the interpreter and the imports)
    threads: int  # must be 1: only a single-threaded process forks safely


_REQUESTS: msgspec.json.Decoder[ForkRequest | CheckRequest] = msgspec.json.Decoder(
    ForkRequest | CheckRequest
)


def decode_request(data: bytes) -> ForkRequest | CheckRequest:
    return _REQUESTS.decode(data)


def encode(message: msgspec.Struct) -> bytes:
    return msgspec.json.encode(message)


def decode_fork_reply(data: bytes) -> ForkReply:
    return msgspec.json.decode(data, type=ForkReply)


def decode_stale_reply(data: bytes) -> StaleReply:
    return msgspec.json.decode(data, type=StaleReply)


def decode_ready(data: bytes) -> ReadyReport:
    return msgspec.json.decode(data, type=ReadyReport)
