"""The worker template ("zygote") as the supervisor sees it: start, fork, check, replace.

A worker started as a fresh interpreter spends 0.6-0.9 s of CPU importing trio, h2,
aioquic, msgspec and the natives before it can serve, on the CPU of a worker that is
serving. The zygote (workers/zygote.py) pays that once: the supervisor starts it, and
each worker is then a fork of it that only boots (`fork_worker`). The supervisor passes
the worker's fds (control socket, listening sockets, QUIC tables) by SCM_RIGHTS with each
request, so the zygote holds no socket and a reload's new listening sockets need no new
zygote. The worker ends up the supervisor's own child (PR_SET_CHILD_SUBREAPER), with the
fd table, command line, session and PR_SET_PDEATHSIG of an exec-spawned worker.

Lifecycle. Started with the supervisor; restarted after it dies (backoff 1 s doubling to
30 s; `zygote_exited` logged). At every reload, before forking the new generation, the
supervisor asks it whether a module it imported changed on disk; if so (an upgrade) it is
replaced, and the new generation is forked from the new one (`zygote_stale`). Whenever
it cannot be used (not running, not ready in time, a failed fork, more fds than one
message carries) the worker is spawned as a fresh interpreter (`worker_spawn_fallback`):
a zygote problem never fails a boot that a fresh spawn would not fail.
Must never block the supervisor's loop: every exchange is awaited with a deadline, and a
zygote that misses one is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any

import msgspec
import structlog
import trio

from gateway.zygote_messages import (
    MAX_FDS,
    CheckRequest,
    ForkRequest,
    ReadyReport,
    decode_fork_reply,
    decode_ready,
    decode_stale_reply,
    encode,
)
from supervisor.spawn import AdoptedChild, ChildProcess, spawn
from supervisor.worker_handle import describe_exit, process_cpu_s

log = structlog.get_logger("expressgateway.supervisor")

REPLY_TIMEOUT_S = 2.0  # a fork or a check the zygote has not answered by then: it is wedged
RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a zygote that lived this long resets the restart backoff
# The zygote's argv carries this much padding, so a forked worker can write its own
# (longer) command line in place (workers/proc_title.py).
TITLE_ROOM = "." * 96


class _Template:
    """One zygote process and its request socket."""

    def __init__(self, process: ChildProcess, sock: trio.socket.SocketType) -> None:
        self.process = process
        self.sock = sock
        self.ready: ReadyReport | None = None
        self.started_at = time.monotonic()
        self.lock = trio.Lock()  # one request in flight
        self.settled = trio.Event()  # set once ready, discarded or exited

    @property
    def pid(self) -> int:
        return self.process.pid


class Zygote:
    def __init__(self, *, log_format: str, enabled: bool, boot_timeout_s: float) -> None:
        self.log_format = log_format
        self.enabled = enabled
        self.usable = True  # False when the supervisor cannot be the workers' reaper
        self.boot_timeout_s = boot_timeout_s
        self.current: _Template | None = None
        self.forks = 0
        self.fallbacks = 0
        self.restarts = 0
        self.last_problem = ""
        self._restart_delay_s = RESTART_MIN_S
        self._nursery: trio.Nursery | None = None
        self._wanted = trio.Event()  # set: start one now (the restart timer skipped)
        self._launched = trio.Event()  # set (then replaced) after each start attempt

    # ---- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a zygote running while enabled, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not self.enabled:
                    await self._wanted.wait()
                    self._wanted = trio.Event()
                    continue
                template = await self._start()
                self._launched.set()
                self._launched = trio.Event()
                if template is not None:
                    await template.process.wait()
                    template.settled.set()
                    template.sock.close()  # a request still waiting on it fails at once
                    if self.current is not template:
                        continue  # retired on purpose (replaced, disabled): no backoff
                    self.current = None
                    lived_s = time.monotonic() - template.started_at
                    if lived_s >= STABLE_S:
                        self._restart_delay_s = RESTART_MIN_S
                    self.restarts += 1
                    how = describe_exit(template.process.returncode)
                    self.last_problem = f"exited: {how}"
                    log.warning(
                        "zygote_exited",
                        pid=template.pid,
                        how=how,
                        lived_s=round(lived_s, 1),
                        restart_in_s=self._restart_delay_s,
                    )
                with trio.move_on_after(self._restart_delay_s):
                    await self._wanted.wait()  # a caller needing a zygote now cuts it short
                self._wanted = trio.Event()
                self._restart_delay_s = min(self._restart_delay_s * 2, RESTART_MAX_S)

    def configure(self, *, enabled: bool, log_format: str, boot_timeout_s: float) -> None:
        """A reload's settings: they apply to the workers started after it."""
        self.log_format = log_format
        self.boot_timeout_s = boot_timeout_s
        enabled = enabled and self.usable
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled:
            self._wanted.set()
        else:
            self.close()

    async def _start(self) -> _Template | None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        child_end.set_inheritable(True)
        argv = [
            sys.executable, "-m", "workers.zygote",
            "--request-fd", str(child_end.fileno()),
            "--parent-pid", str(os.getpid()),
            "--log-format", self.log_format,
            f"--title-room={TITLE_ROOM}",
        ]  # fmt: skip
        try:
            process = await spawn(argv, pass_fds=[child_end.fileno()], start_new_session=True)
        except OSError as exc:
            child_end.close()
            parent_end.close()
            self.last_problem = f"spawn failed: {exc}"
            log.error("zygote_spawn_failed", error=str(exc))
            return None
        finally:
            if child_end.fileno() != -1:
                child_end.close()
        template = _Template(process, trio.socket.from_stdlib_socket(parent_end))
        self.current = template
        assert self._nursery is not None
        self._nursery.start_soon(self._await_ready, template)
        return template

    async def _await_ready(self, template: _Template) -> None:
        data = b""
        with trio.move_on_after(self.boot_timeout_s):
            try:
                data = await template.sock.recv(65536)
            except (OSError, trio.ClosedResourceError):
                data = b""
        try:
            report = decode_ready(data) if data else None
        except msgspec.DecodeError:
            report = None
        if report is None or report.threads != 1:
            self._discard(template, f"not ready: {report or 'no report'}")
            template.settled.set()
            return
        template.ready = report
        template.settled.set()
        log.info(
            "zygote_ready",
            what="worker template: new workers are forked from it",
            pid=template.pid,
            modules=report.modules,
            import_cpu_s=report.import_cpu_s,
            startup_s=round(time.monotonic() - template.started_at, 3),
        )

    def _discard(self, template: _Template, why: str) -> None:
        """Give up on this zygote: kill it (the run loop logs the exit and restarts)."""
        self.last_problem = why
        log.warning("zygote_discarded", pid=template.pid, reason=why)
        template.process.kill()

    async def _ready_template(self, wait_s: float) -> _Template | None:
        """The current zygote once ready: one not running is started now; one starting is
        awaited, up to `wait_s`. None when it fails or takes longer."""
        if not self.enabled:
            return None
        with trio.move_on_after(wait_s):
            template = self.current
            if template is not None and template.process.returncode is not None:
                template = None  # dead, and the run loop has not seen it yet
            if template is None:
                launched = self._launched
                self._wanted.set()  # now rather than at the restart backoff's end
                await launched.wait()
                template = self.current
            if template is None:
                return None
            await template.settled.wait()
            if template.ready is not None and self.current is template:
                return template
        return None

    async def refresh(self) -> None:
        """Before a reload forks its generation: a zygote whose imported code changed on
        disk is replaced and the new one awaited; a dead one is started and awaited."""
        if not self.enabled:
            return
        reply = None
        for _ in range(2):  # once more if it dies under the check: start a new one
            template = await self._ready_template(self.boot_timeout_s)
            if template is None:
                return
            reply = await self._exchange(template, encode(CheckRequest()), [])
            if reply is not None:
                break
        if reply is None:
            return
        changed = decode_stale_reply(reply).changed
        if not changed:
            return
        log.info("zygote_stale", pid=template.pid, changed=changed, action="replace")
        self.current = None
        template.process.send_signal(signal.SIGTERM)
        self._wanted.set()
        await self._ready_template(self.boot_timeout_s)

    async def _exchange(self, template: _Template, payload: bytes, fds: list[int]) -> bytes | None:
        async with template.lock:
            with trio.move_on_after(REPLY_TIMEOUT_S):
                try:
                    if fds:
                        await template.sock.sendmsg(
                            [payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fd_array(fds))]
                        )
                    else:
                        await template.sock.send(payload)
                    reply = await template.sock.recv(65536)
                except (OSError, trio.ClosedResourceError) as exc:
                    self._discard(template, f"request failed: {exc!r}")
                    return None
                if not reply:
                    self._discard(template, "request socket closed")
                    return None
                return reply
        self._discard(template, f"no answer within {REPLY_TIMEOUT_S:.0f}s")
        return None

    # ---- forking workers ---------------------------------------------------------

    async def fork_worker(
        self, control_fd: int, fds: list[int], log_format: str
    ) -> AdoptedChild | None:
        """A worker forked from the zygote, or None: the caller spawns a fresh one."""
        if not self.enabled:
            return None
        why = ""
        template = self.current
        if len(fds) > MAX_FDS:
            why = f"{len(fds)} fds, more than one message carries ({MAX_FDS})"
        elif template is None or template.ready is None:
            # At start and at a reload the supervisor awaited it (`wait_ready`, `refresh`);
            # a zygote that is (re)starting now is not waited for: a fresh spawn is as fast.
            if template is None:
                self._wanted.set()
            why = f"no zygote ready ({self.last_problem or 'starting'})"
        child = None
        if not why and template is not None:
            request = ForkRequest(
                target_fds=fds, control_fd=control_fd, parent_pid=os.getpid(), log_format=log_format
            )
            reply = await self._exchange(template, encode(request), fds)
            if reply is None:
                why = self.last_problem
            else:
                answer = decode_fork_reply(reply)
                if answer.error:
                    why = f"fork failed: {answer.error}"
                else:
                    try:
                        child = AdoptedChild(answer.pid)
                    except OSError as exc:
                        why = f"pidfd_open({answer.pid}): {exc}"
        if child is not None:
            self.forks += 1
            return child
        self.fallbacks += 1
        log.warning("worker_spawn_fallback", reason=why)
        return None

    async def wait_ready(self) -> None:
        """At start: give the first zygote its boot time (the first generation forks)."""
        await self._ready_template(self.boot_timeout_s)

    def disable(self, reason: str) -> None:
        """For good: the zygote cannot be used by this supervisor."""
        self.usable = self.enabled = False
        self.last_problem = reason
        log.warning("zygote_disabled", reason=reason)
        self.close()

    def close(self) -> None:
        template, self.current = self.current, None
        if template is not None:
            template.process.kill()

    # ---- status ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        template = self.current
        state = "disabled"
        if self.enabled:
            state = "absent" if template is None else ("ready" if template.ready else "starting")
        return {
            "state": state,
            "pid": template.pid if template else None,
            "uptime_s": round(time.monotonic() - template.started_at, 1) if template else None,
            "cpu_s": process_cpu_s(template.pid) if template else None,
            "forks": self.forks,
            "fallbacks": self.fallbacks,
            "restarts": self.restarts,
            "last_problem": self.last_problem or None,
        }


def _fd_array(fds: list[int]) -> bytes:
    import array

    return array.array("i", fds).tobytes()
