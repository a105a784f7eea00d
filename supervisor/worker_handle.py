"""One worker process as the supervisor sees it: spawn, channel, state, exit.

`WorkerHandle.run` is the task that owns the process from spawn to exit: it
passes the sockets, pins the CPU, sends `Boot`, reads events (ready, heartbeat,
drained) and records how the process ended (exit code or signal name).

It is also the worker's fault boundary: whatever goes wrong on this worker's channel
(a malformed frame, an undecodable heartbeat, an event illegal in its state, a send
that cannot complete, heartbeats that stop) ends *this worker* — recorded in `fault`,
the process killed, the supervisor respawning it on its CPU — and never escapes into
the supervisor. It must never let one worker's channel stall or stop another's.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

from gateway.config.plan import GatewayPlan
from gateway.ipc import (
    BecameReady,
    Boot,
    BootFailed,
    Drain,
    Drained,
    FrameDecoder,
    Heartbeat,
    Stop,
    ToWorker,
    encode,
)
from gateway.lifecycle import WorkerInput, WorkerState, next_state
from gateway.steering import MAX_CPUS, shared_socket_key
from supervisor.spawn import AdoptedChild, ChildProcess, spawn

if TYPE_CHECKING:
    from supervisor.zygote import Zygote

log = structlog.get_logger("expressgateway.supervisor")

# A healthy worker reads its channel at once; a send that cannot finish in this long means
# it is not reading (stopped, wedged). The frame may be half written: the channel is lost.
SEND_TIMEOUT_S = 5.0
# Unresponsive worker: SIGABRT (the worker's faulthandler prints every thread's stack),
# then SIGKILL this much later if it has not died (a SIGSTOPped process only dies so).
ABORT_GRACE_S = 1.0


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def process_cpu_s(pid: int) -> float | None:
    """CPU time the process has run so far, in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as fh:  # ns on CPU, by the scheduler
            return round(int(fh.read().split()[0]) / 1e9, 4)
    except (OSError, IndexError, ValueError):
        return None


@dataclass(eq=False)
class WorkerHandle:
    slot: int
    cpu: int
    generation: int
    plan: GatewayPlan
    listener_fds: dict[str, int]
    quic_table_fds: dict[str, list[int]] = field(default_factory=dict)
    log_format: str = "auto"
    state: WorkerState = WorkerState.STARTING
    pid: int = 0
    started_at: float = field(default_factory=time.monotonic)
    returncode: int | None = None
    last_heartbeat: Heartbeat | None = None
    boot_error: str = ""
    fault: str = ""  # why the supervisor ended this worker (protocol, unresponsive, send)
    respawn: bool = True  # respawn on an unexpected exit (false once drained or stopping)
    on_heartbeat: Callable[[WorkerHandle, Heartbeat], None] | None = None
    zygote: Zygote | None = None  # fork from it when it can; else a fresh interpreter
    started_by: str = ""  # "zygote" or "exec"
    ready: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    _stream: trio.SocketStream | None = None
    _process: ChildProcess | AdoptedChild | None = None
    _nursery: trio.Nursery | None = None
    _last_seen_at: float = 0.0  # trio clock: the last complete frame from the worker
    # Senders (boot, health broadcasts, drain) take turns: concurrent send_all raises
    # BusyResourceError, which used to drop the message silently.
    _send_lock: trio.Lock = field(default_factory=trio.Lock)

    def transition(self, event: WorkerInput) -> None:
        self.state = next_state(self.state, event)

    @property
    def metrics_source(self) -> tuple[int, int, int]:
        """The aggregator's identity for this process's counters."""
        return (self.generation, self.slot, self.pid)

    @property
    def exit_text(self) -> str:
        return describe_exit(self.returncode)

    async def send(self, message: ToWorker, *, timeout_s: float = SEND_TIMEOUT_S) -> bool:
        """Send one command; False when the channel is gone or the send timed out (the
        worker is then ended: a half-written frame leaves the channel unusable)."""
        if self._stream is None or self.fault:
            return False
        with trio.move_on_after(timeout_s) as scope:
            try:
                async with self._send_lock:
                    if self.fault:
                        return False
                    await self._stream.send_all(encode(message))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
        if scope.cancelled_caught:
            self.end_for(
                "send_timeout",
                f"{type(message).__name__} not taken within {timeout_s:.1f}s",
                abort_first=True,
            )
            return False
        return True

    def end_for(self, kind: str, detail: str, *, abort_first: bool) -> None:
        """The fault boundary's verdict: log why, then end the process (SIGKILL, or
        SIGABRT then SIGKILL for a worker that may be wedged and can tell us where)."""
        if self.fault or self.returncode is not None:
            return
        self.fault = f"{kind}: {detail}"
        log.error(
            "worker_fault",
            kind=kind,
            detail=detail,
            slot=self.slot,
            pid=self.pid,
            cpu=self.cpu,
            generation=self.generation,
            action="SIGABRT then SIGKILL" if abort_first else "SIGKILL",
        )
        if abort_first and self._nursery is not None:
            self._nursery.start_soon(self._abort_then_kill)
        else:
            self.kill()

    async def _abort_then_kill(self) -> None:
        self.kill(signal.SIGABRT)
        with trio.move_on_after(ABORT_GRACE_S):
            await self.exited.wait()
            return
        self.kill(signal.SIGKILL)

    async def drain(self, timeout_s: float) -> None:
        if self.state in (WorkerState.EXITED,):
            return
        self.respawn = False
        self.transition(WorkerInput.DRAIN)
        await self.send(Drain(timeout_s=timeout_s))

    async def stop(self) -> None:
        self.respawn = False
        await self.send(Stop())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self._process is not None and self._process.returncode is None:
            try:
                self._process.send_signal(sig)
            except ProcessLookupError:
                pass

    async def _start_process(self, child_end: socket.socket) -> ChildProcess | AdoptedChild:
        """Fork the worker from the zygote, or (when it cannot) spawn a fresh interpreter;
        either way the same process: same fds at the same numbers, same argv, own session."""
        fds = [
            child_end.fileno(),
            *self.listener_fds.values(),
            *(fd for fds in self.quic_table_fds.values() for fd in fds),
        ]
        if self.zygote is not None:
            forked = await self.zygote.fork_worker(child_end.fileno(), fds, self.log_format)
            if forked is not None:
                self.started_by = "zygote"
                return forked
        argv = [
            sys.executable, "-m", "workers.main",
            "--control-fd", str(child_end.fileno()),
            "--parent-pid", str(os.getpid()),
            "--log-format", self.log_format,
        ]  # fmt: skip
        self.started_by = "exec"
        # not trio's open_process: see supervisor/spawn.py
        return await spawn(argv, pass_fds=fds, start_new_session=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_end.set_inheritable(True)
        self.started_at = time.monotonic()
        try:
            process = await self._start_process(child_end)
        except OSError as exc:
            child_end.close()
            parent_end.close()
            self.boot_error = f"spawn failed: {exc}"
            self.returncode = 127
            self.transition(WorkerInput.EXITED)
            self.exited.set()
            task_status.started()
            return
        child_end.close()
        self._process = process
        self.pid = process.pid
        try:
            os.sched_setaffinity(process.pid, {self.cpu})
        except OSError:
            pass  # it exited already; the worker pins itself again on Boot
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(parent_end))
        try:
            await self.send(
                Boot(
                    worker_id=self.slot,
                    generation=self.generation,
                    cpu=self.cpu,
                    plan=self.plan,
                    listener_fds=self.listener_fds,
                    worker_key=shared_socket_key(self.cpu % MAX_CPUS),
                    quic_table_fds=self.quic_table_fds,
                ),
                timeout_s=self.plan.config.runtime.worker_boot_timeout_ms / 1000,
            )
            # Only now may others send (health verdicts): the worker ignores anything
            # that reaches it before its Boot.
            task_status.started()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._serve_events)
                nursery.start_soon(self._watch_heartbeats)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                self.returncode = process.returncode
                await self._stream.aclose()
                if self.state is not WorkerState.EXITED:
                    self.transition(WorkerInput.EXITED)
                self.exited.set()

    async def _serve_events(self) -> None:
        """Read the worker's events; any error in doing so ends this worker only."""
        try:
            await self._read_events()
        except Exception as exc:  # the boundary: cancellation (BaseException) passes
            self.end_for("protocol", f"{type(exc).__name__}: {exc}", abort_first=False)

    async def _watch_heartbeats(self) -> None:
        """A ready worker that sends nothing for `worker_heartbeat_timeout_ms` is wedged
        or stopped: end it so it is replaced on its CPU."""
        timeout_s = self.plan.config.runtime.worker_heartbeat_timeout_ms / 1000
        while True:
            await trio.sleep(min(1.0, timeout_s / 4))
            if self.state is not WorkerState.READY:
                continue  # booting has its own deadline; draining has the drain ladder
            silent_s = trio.current_time() - self._last_seen_at
            if silent_s > timeout_s:
                self.end_for(
                    "unresponsive",
                    f"no heartbeat for {silent_s:.1f}s (timeout {timeout_s:.1f}s)",
                    abort_first=True,
                )
                return

    async def _read_events(self) -> None:
        assert self._stream is not None
        decoder = FrameDecoder("to_supervisor")
        while True:
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for message in decoder.feed(data):
                self._last_seen_at = trio.current_time()
                if isinstance(message, BecameReady):
                    self.transition(WorkerInput.BECAME_READY)
                    self.ready.set()
                    log.info(
                        "worker_started",
                        slot=self.slot,
                        pid=self.pid,
                        cpu=self.cpu,
                        generation=self.generation,
                        started_by=self.started_by,
                        ready_after_s=round(time.monotonic() - self.started_at, 3),
                        cpu_s=process_cpu_s(self.pid),
                    )
                elif isinstance(message, Heartbeat):
                    self.last_heartbeat = message
                    if self.on_heartbeat is not None:
                        self.on_heartbeat(self, message)
                elif isinstance(message, Drained):
                    log.info(
                        "worker_drained",
                        slot=self.slot,
                        pid=self.pid,
                        generation=self.generation,
                        closed_connections=message.closed_connections,
                    )
                elif isinstance(message, BootFailed):
                    self.boot_error = message.reason
