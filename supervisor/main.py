"""The supervisor: owns sockets, worker generations, reload, drain and stop.

Signals and control commands become queued operations carried out one at a time
(`_op_lock`), so a reload never races a drain. A generation is a set of workers,
one per CPU; reload starts generation N+1 on every CPU, waits until all are Ready,
then drains N — if N+1 fails to boot it is stopped and N keeps serving. How a draining
worker is stopped after its budget (SIGTERM, SIGKILL) is `supervisor.draining`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import msgspec
import structlog
import trio

from gateway.config.address import parse_host_port
from gateway.config.diff import diff_plans
from gateway.config.plan import GatewayPlan, SocketKey
from gateway.control import Response
from gateway.errors import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    EXIT_WORKER_BOOT,
    ConfigError,
    DatapathUnavailable,
)
from gateway.ipc import Heartbeat, ProtocolError, SetBackendHealth
from gateway.lifecycle import RestartBackoff, WorkerState
from gateway.logs import configure_logging
from gateway.metrics.aggregator import MetricsAggregator, unmergeable
from gateway.metrics.snapshot import decode_snapshot
from gateway.metrics.supervisor_metrics import SupervisorMetrics
from gateway.version import VERSION
from supervisor.admin import AdminState, serve_admin
from supervisor.cid_tables import CidTables
from supervisor.datapath_control import DatapathControl, start_datapath
from supervisor.draining import DrainLadder, drain_budget_s
from supervisor.fd_limit import raise_nofile_limit
from supervisor.metrics_export import build_exporter
from supervisor.prober import Prober
from supervisor.sdnotify import Notifier
from supervisor.sockets import SocketTable, enable_tcp_migrate_req
from supervisor.spawn import become_subreaper
from supervisor.status_report import status_line
from supervisor.worker_handle import WorkerHandle
from supervisor.zygote import Zygote

log = structlog.get_logger("expressgateway.supervisor")


class Supervisor:
    def __init__(
        self, plan: GatewayPlan, config_path: str, *, notifier: Notifier | None = None
    ) -> None:
        self.plan = plan
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.sockets = SocketTable()
        self.cid_tables = CidTables()
        self.generation = 0
        self.workers: list[WorkerHandle] = []  # every live (not yet reaped) worker
        self.vacant_slots: set[int] = set()
        self.backoff: dict[int, RestartBackoff] = {}
        self.started_at = time.monotonic()
        self.state = "starting"
        self.last_reload: dict[str, Any] = {}
        self.reloads = {"ok": 0, "failed": 0}
        self.worker_restarts = 0
        self.ready_once = False
        self._op_lock = trio.Lock()
        self._stopped = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.exit_code = 0
        self.prober = Prober(self._broadcast_health)
        self.aggregator = MetricsAggregator(
            max_series_per_family=plan.config.observability.max_series_per_family
        )
        self.metrics = SupervisorMetrics(VERSION)
        self.draining = DrainLadder(self.metrics)
        registry, collector = build_exporter(self.aggregator, self.metrics)
        self.admin = AdminState(
            registry,
            before_render=collector.freeze,
            api_token_sha256=plan.config.admin.api_token_hash,
        )
        self.datapath: DatapathControl | None = None
        self.quic_sockets: set[SocketKey] = set()  # flagged QUIC in the datapath
        self.zygote = Zygote(
            log_format=plan.config.observability.log_format,
            enabled=plan.config.runtime.worker_zygote,
            boot_timeout_s=plan.config.runtime.worker_boot_timeout_ms / 1000,
        )

    # ---- workers ---------------------------------------------------------------

    def current(self) -> list[WorkerHandle]:
        return [
            w
            for w in self.workers
            if w.generation == self.generation and w.state is not WorkerState.EXITED
        ]

    def _listener_keys(self, plan: GatewayPlan) -> dict[str, Any]:
        return {lst.name: lst.socket for lst in plan.listeners}

    async def _spawn(self, slot: int, cpu: int, generation: int, plan: GatewayPlan) -> WorkerHandle:
        handle = WorkerHandle(
            slot=slot,
            cpu=cpu,
            generation=generation,
            plan=plan,
            listener_fds=self.sockets.fds_for(self._listener_keys(plan), cpu),
            quic_table_fds=self.cid_tables.fds(),
            log_format=plan.config.observability.log_format,
            on_heartbeat=self._on_heartbeat,
            zygote=self.zygote,
        )
        self.workers.append(handle)
        assert self._nursery is not None
        await self._nursery.start(self._supervise, handle)
        await self._send_known_health(handle)
        return handle

    def _on_heartbeat(self, handle: WorkerHandle, heartbeat: Heartbeat) -> None:
        """Raises ProtocolError on a malformed snapshot: the worker's fault boundary
        (WorkerHandle) then ends that worker; the aggregator keeps its last good one."""
        if heartbeat.metrics:
            try:
                snapshot = decode_snapshot(heartbeat.metrics)
            except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
                raise ProtocolError(f"undecodable metrics snapshot: {exc}") from None
            problem = unmergeable(snapshot)
            if problem:  # merged later with the others' series, it would fail every scrape
                raise ProtocolError(f"metrics snapshot: {problem}")
            self.aggregator.update(handle.metrics_source, snapshot)

    async def _broadcast_health(self, listener: str, backend_id: str, healthy: bool) -> None:
        self.metrics.set_backend_health(listener, backend_id, healthy)
        message = SetBackendHealth(listener=listener, backend_id=backend_id, healthy=healthy)
        # Concurrently: a worker that does not read (each send has its own timeout) must
        # not hold the verdict back from the others.
        async with trio.open_nursery() as sends:
            for w in list(self.workers):
                if w.state is not WorkerState.EXITED:
                    sends.start_soon(w.send, message)

    async def _send_known_health(self, handle: WorkerHandle) -> None:
        """A new worker starts with every verdict the prober already has."""
        for listener, backend_id, healthy in self.prober.healthy_flags():
            if not healthy:
                await handle.send(
                    SetBackendHealth(listener=listener, backend_id=backend_id, healthy=False)
                )

    def _count_workers(self) -> None:
        counts: dict[str, int] = {state.value: 0 for state in WorkerState}
        for w in self.workers:
            counts[w.state.value] += 1
        self.metrics.set_workers(counts)

    async def _supervise(
        self, handle: WorkerHandle, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await handle.run(task_status=task_status)
        self.workers.remove(handle)
        self.aggregator.worker_gone(handle.metrics_source)
        level = "info" if not handle.respawn else "warning"
        getattr(log, level)(
            "worker_exited",
            slot=handle.slot,
            pid=handle.pid,
            cpu=handle.cpu,
            generation=handle.generation,
            how=handle.exit_text,
            boot_error=handle.boot_error or None,
            fault=handle.fault or None,
        )
        if (
            handle.respawn
            and handle.generation == self.generation
            and self.state == "running"
            and handle.ready.is_set()
        ):
            await self._respawn_later(handle)

    async def _respawn_later(self, dead: WorkerHandle) -> None:
        backoff = self.backoff.setdefault(dead.slot, RestartBackoff())
        delay = backoff.on_crash(started_at=dead.started_at, now=time.monotonic())
        if backoff.in_crash_loop(time.monotonic()):
            log.error(
                "worker_crash_loop", slot=dead.slot, cpu=dead.cpu, crashes=len(backoff.crashes)
            )
        await trio.sleep(delay)
        if (
            dead.generation != self.generation
            or self.state != "running"
            or dead.slot in self.vacant_slots
        ):
            return
        if any(w.slot == dead.slot and w.generation == self.generation for w in self.workers):
            return  # a drain already replaced it
        self.worker_restarts += 1
        self.metrics.worker_restarted()
        handle = await self._spawn(dead.slot, dead.cpu, dead.generation, self.plan)
        log.info(
            "worker_respawned", slot=handle.slot, pid=handle.pid, cpu=handle.cpu, delay_s=delay
        )

    async def _wait_ready(self, handles: list[WorkerHandle], timeout_s: float) -> list[str]:
        """Wait until every handle is Ready; return the failures (empty when all are)."""
        with trio.move_on_after(timeout_s):
            for h in handles:
                async with trio.open_nursery() as race:

                    async def ready(h: WorkerHandle = h) -> None:
                        await h.ready.wait()
                        race.cancel_scope.cancel()

                    async def exited(h: WorkerHandle = h) -> None:
                        await h.exited.wait()
                        race.cancel_scope.cancel()

                    race.start_soon(ready)
                    race.start_soon(exited)
        failures = []
        for h in handles:
            if not h.ready.is_set():
                why = h.boot_error or (
                    h.exit_text if h.exited.is_set() else f"not ready within {timeout_s:.1f}s"
                )
                failures.append(f"worker {h.slot} (cpu {h.cpu}, pid {h.pid}): {why}")
        return failures

    async def _start_generation(
        self, plan: GatewayPlan, generation: int
    ) -> tuple[list[WorkerHandle], list[str]]:
        """Start `generation` on every CPU; (its workers, failures). On any failure the
        generation is already stopped again."""
        handles = []
        for slot, cpu in enumerate(plan.cpus):
            handles.append(await self._spawn(slot, cpu, generation, plan))
        failures = await self._wait_ready(
            handles, plan.config.runtime.worker_boot_timeout_ms / 1000
        )
        if failures:
            await self._abandon(handles)
        return handles, failures

    async def _abandon(self, handles: list[WorkerHandle]) -> None:
        """Stop a generation that will not serve, and wait until its workers are gone."""
        async with trio.open_nursery() as sends:
            for h in handles:
                h.respawn = False
                sends.start_soon(h.stop)
        for h in handles:
            h.kill()
        for h in handles:
            await h.exited.wait()

    # ---- operations (serialized) -------------------------------------------------

    async def reload(self) -> Response:
        async with self._op_lock:
            if self.state != "running":
                return Response(ok=False, errors=[f"cannot reload while {self.state}"])
            self.notifier.reloading()
            self.state = "reloading"
            try:
                return await self._reload_locked()
            except Exception as exc:  # the reload's boundary (SIGHUP has no other)
                return await self._reload_crashed(exc)
            finally:
                if self.state == "reloading":
                    self.state = "running"
                self.notifier.ready(self._status_line())

    async def _reload_crashed(self, exc: Exception) -> Response:
        """An unexpected error in a reload: stop whatever of the new generation started;
        the current one keeps serving."""
        log.exception("reload_crashed", generation=self.generation)
        await self._abandon([w for w in self.workers if w.generation > self.generation])
        self.reloads["failed"] += 1
        self.metrics.reload_finished("internal_error")
        errors = [f"reload failed: {type(exc).__name__}: {exc}", "old generation keeps serving"]
        self.last_reload = {"result": "internal_error", "errors": errors}
        return Response(ok=False, errors=errors)

    async def _reload_locked(self) -> Response:
        from supervisor.cli import read_plan

        started = time.monotonic()
        try:
            plan = await trio.to_thread.run_sync(read_plan, self.config_path)
        except ConfigError as exc:
            self.reloads["failed"] += 1
            self.metrics.reload_finished("invalid_config")
            errors = [p.render(self.config_path) for p in exc.problems]
            self.last_reload = {"result": "invalid_config", "errors": errors}
            log.warning("reload_rejected", problems=len(errors))
            return Response(ok=False, errors=errors)
        diff = diff_plans(self.plan, plan)
        try:
            opened = self.sockets.ensure(plan.sockets(), plan.cpus)
        except ConfigError as exc:
            self.reloads["failed"] += 1
            self.metrics.reload_finished("socket_error")
            errors = [p.render() for p in exc.problems]
            self.last_reload = {"result": "socket_error", "errors": errors}
            return Response(ok=False, errors=errors)
        self.cid_tables.ensure(plan)
        # Whether the zygote is used is the running config's choice until this reload
        # succeeds; a zygote whose code changed on disk is replaced first (upgrades).
        await self.zygote.refresh()
        old_generation, old_plan = self.generation, self.plan
        new_generation = (
            max(self.generation, max((w.generation for w in self.workers), default=0)) + 1
        )
        handles, failures = await self._start_generation(plan, new_generation)
        if failures:
            self.sockets.close(opened)
            self.reloads["failed"] += 1
            self.metrics.reload_finished("boot_failed")
            self.last_reload = {"result": "boot_failed", "errors": failures}
            log.error("reload_boot_failed", generation=new_generation, failures=failures)
            return Response(
                ok=False,
                errors=["new generation failed to boot; old generation keeps serving", *failures],
            )
        if self.datapath is not None:
            try:
                self.datapath.apply_config(plan.config.kernel, old_plan.config.kernel)
            except DatapathUnavailable as exc:
                # e.g. a full deny map: the new generation never serves, the old one does
                # with its own kernel settings.
                self.datapath.revert_config(old_plan.config.kernel, plan.config.kernel)
                await self._abandon(handles)
                self.sockets.close(opened)
                self.reloads["failed"] += 1
                self.metrics.reload_finished("datapath_error")
                errors = [f"kernel datapath: {exc}", "old generation keeps serving"]
                self.last_reload = {"result": "datapath_error", "errors": errors}
                log.error("reload_datapath_failed", generation=new_generation, error=str(exc))
                return Response(ok=False, errors=errors)
        self.generation, self.plan = new_generation, plan
        self.zygote.configure(
            enabled=plan.config.runtime.worker_zygote,
            log_format=plan.config.observability.log_format,
            boot_timeout_s=plan.config.runtime.worker_boot_timeout_ms / 1000,
        )
        self.cid_tables.release_unused(plan)
        self.vacant_slots.clear()
        self._kernel_steer()
        self.prober.stop()
        assert self._nursery is not None
        await self._nursery.start(self.prober.serve, plan)
        old = [
            w
            for w in self.workers
            if w.generation <= old_generation and w.state is not WorkerState.EXITED
        ]
        await self.draining.drain(old, drain_budget_s(old_plan))
        self.draining.cap(self.workers, plan.config.runtime.max_draining_generations)
        assert self._nursery is not None
        self._nursery.start_soon(self._close_unused_sockets_after, old)
        self.reloads["ok"] += 1
        self.metrics.reload_finished("success")
        data = {
            "generation": new_generation,
            "previous_generation": old_generation,
            "workers": len(plan.cpus),
            "draining": len(old),
            "config_hash": plan.config_hash,
            "duration_s": round(time.monotonic() - started, 3),
            "diff": {
                "listeners_added": diff.listeners_added,
                "listeners_removed": diff.listeners_removed,
                "listeners_changed": diff.listeners_changed,
            },
            "restart_required": diff.restart_required,
        }
        self.last_reload = {"result": "ok", **data}
        log.info("reload_succeeded", **data)
        return Response(ok=True, data=data)

    async def _close_unused_sockets_after(self, old: list[WorkerHandle]) -> None:
        for h in old:
            await h.exited.wait()
        live_cpus = sorted(
            {w.cpu for w in self.workers if w.state is not WorkerState.EXITED} | set(self.plan.cpus)
        )
        self.sockets.close(self.sockets.unused(self.plan.sockets(), live_cpus))
        self._kernel_steer()

    async def drain_worker(self, slot: int, *, timeout_s: float | None, replace: bool) -> Response:
        async with self._op_lock:
            if self.state != "running":
                return Response(ok=False, errors=[f"cannot drain while {self.state}"])
            targets = [w for w in self.current() if w.slot == slot and w.state is WorkerState.READY]
            if not targets:
                known = sorted({w.slot for w in self.current()})
                return Response(
                    ok=False,
                    errors=[
                        f"no ready worker {slot} in generation {self.generation}; workers: {known}"
                    ],
                )
            old = targets[0]
            budget = timeout_s if timeout_s is not None else drain_budget_s(self.plan)
            new: WorkerHandle | None = None
            if replace:
                new = await self._spawn(slot, old.cpu, self.generation, self.plan)
                failures = await self._wait_ready(
                    [new], self.plan.config.runtime.worker_boot_timeout_ms / 1000
                )
                if failures:
                    new.respawn = False
                    new.kill()
                    return Response(
                        ok=False,
                        errors=["replacement failed to boot; worker keeps serving", *failures],
                    )
            else:
                self.vacant_slots.add(slot)
            await self.draining.drain([old], budget)
            if not replace:
                # Nobody accepts on this CPU's sockets any more: close them so the kernel
                # stops hashing connections there (tcp_migrate_req moves queued ones).
                self._kernel_steer()  # XDP slots and sockarray first: the CPU has no worker
                self.sockets.close([(key, old.cpu) for key in self.plan.sockets()])
            data = {
                "slot": slot,
                "drained_pid": old.pid,
                "replacement_pid": new.pid if new else None,
                "timeout_s": budget,
            }
            log.info("worker_drain_started", **data)
            return Response(ok=True, data=data)

    async def stop(self, *, now: bool) -> None:
        if self.state in ("stopping",):
            if now:
                for w in list(self.workers):
                    w.kill()
            return
        self.state = "stopping"
        self.admin.ready = False
        self.admin.draining = True
        self.notifier.stopping()
        log.info("supervisor_stopping", graceful=not now)
        live = [w for w in self.workers if w.state is not WorkerState.EXITED]
        if now:
            async with trio.open_nursery() as sends:
                for w in live:
                    sends.start_soon(w.stop)
            with trio.move_on_after(1.0):
                for w in live:
                    await w.exited.wait()
            for w in live:
                w.kill()
        else:
            budget = drain_budget_s(self.plan)
            await self.draining.drain(live, budget)
            for w in live:
                await w.exited.wait()
        self._stopped.set()

    # ---- status --------------------------------------------------------------------

    def _status_line(self) -> str:
        return status_line(self)

    def _kernel_steer(self) -> None:
        """Point the datapath at the sockets of the CPUs that have a worker."""
        if self.datapath is not None:
            cpus = [c for slot, c in enumerate(self.plan.cpus) if slot not in self.vacant_slots]
            # a quic listener a reload removed keeps its flag while its sockets are open
            # (its draining workers still serve connections on them)
            current = {lp.socket: lp.protocol == "quic" for lp in self.plan.listeners}
            still_open = {key for key, _cpu in self.sockets.sockets}
            quic = {k for k, is_quic in current.items() if is_quic} | {
                k for k in self.quic_sockets if k not in current and k in still_open
            }
            self.quic_sockets = quic
            self.datapath.steer(self.sockets.sockets, cpus, quic=quic)

    def _kernel_start(self) -> None:
        """Probe and open the datapath (raises DatapathUnavailable when required)."""
        self.datapath = start_datapath(self.plan.config.kernel)
        if self.datapath is not None:
            self.sockets.on_new_group = self.datapath.prepare_group

    async def kernel_command(self, args: list[str]) -> Response:
        if self.datapath is None:
            return Response(
                ok=False, errors=["the kernel datapath is not enabled ([kernel] enabled = false)"]
            )
        return await self.datapath.command(args)

    # ---- main ----------------------------------------------------------------------

    async def serve_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                assert self._nursery is not None
                if signum == signal.SIGHUP:
                    log.info("signal_received", signal="SIGHUP", action="reload")
                    self._nursery.start_soon(self._reload_from_signal)
                elif signum == signal.SIGTERM:
                    log.info("signal_received", signal="SIGTERM", action="graceful_stop")
                    self._nursery.start_soon(self.stop_graceful)
                elif signum == signal.SIGINT:
                    log.info("signal_received", signal="SIGINT", action="immediate_stop")
                    self._nursery.start_soon(self.stop_now)

    async def stop_graceful(self) -> None:
        await self.stop(now=False)

    async def stop_now(self) -> None:
        await self.stop(now=True)

    async def _reload_from_signal(self) -> None:
        response = await self.reload()
        if not response.ok:
            for line in response.errors:
                log.warning("reload_problem", problem=line)

    async def serve_admin(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        bind = self.plan.config.observability.metrics_bind
        assert bind is not None
        addr = parse_host_port(bind, allow_hostname=False)
        listeners = await trio.open_tcp_listeners(addr.port, host=addr.host)
        log.info("admin_listening", address=bind)
        async with listeners[0]:
            await serve_admin(listeners[0], self.admin, task_status=task_status)

    async def serve_worker_gauge(self) -> None:
        while True:
            self._count_workers()
            await trio.sleep(0.5)

    async def serve_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    async def run(self) -> int:
        from supervisor.control_server import serve_control

        enable_tcp_migrate_req()
        if not become_subreaper():
            self.zygote.disable("prctl(PR_SET_CHILD_SUBREAPER) failed")
        try:
            self._kernel_start()
            self.sockets.ensure(self.plan.sockets(), self.plan.cpus)
            self.cid_tables.ensure(self.plan)
            if self.datapath is not None:
                self.datapath.apply_config(self.plan.config.kernel)
                self._kernel_steer()
                self.datapath.attach_interfaces()
        except ConfigError as exc:
            for p in exc.problems:
                log.error("listen_failed", problem=p.render())
            self._kernel_close()
            return EXIT_CONFIG
        except DatapathUnavailable as exc:
            log.error("kernel_unavailable", error=str(exc), exit_code=EXIT_UNAVAILABLE)
            self.sockets.close_all()
            self._kernel_close()
            return EXIT_UNAVAILABLE
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self.draining.nursery = nursery
                nursery.start_soon(self.serve_signals)
                await nursery.start(serve_control, self)
                if self.plan.config.observability.metrics_bind:
                    await nursery.start(self.serve_admin)
                nursery.start_soon(self.serve_worker_gauge)
                if self.datapath is not None:
                    nursery.start_soon(self.datapath.serve_metrics, self.metrics)
                self.generation = 1
                self.state = "starting"
                await nursery.start(self.prober.serve, self.plan)
                await nursery.start(self.zygote.run)
                await self.zygote.wait_ready()  # generation 1 forks from it
                _, failures = await self._start_generation(self.plan, 1)
                if failures:
                    for f in failures:
                        log.error("worker_boot_failed", failure=f)
                    self.exit_code = EXIT_WORKER_BOOT
                    nursery.cancel_scope.cancel()
                    return self.exit_code
                self.state = "running"
                self.ready_once = True
                self.admin.boot_completed = True
                self.admin.ready = True
                self.notifier.ready(self._status_line())
                log.info(
                    "supervisor_ready",
                    version=VERSION,
                    generation=1,
                    workers=len(self.plan.cpus),
                    cpus=self.plan.cpus,
                    config=self.config_path,
                )
                nursery.start_soon(self.serve_watchdog)
                await self._stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for w in list(self.workers):
                    w.respawn = False
                    w.kill()
                self.zygote.close()
            self.sockets.close_all()
            self.cid_tables.close_all()
            self._kernel_close()
        log.info("supervisor_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _kernel_close(self) -> None:
        """A stop (or failed start) unloads: nothing stays attached. Only a supervisor
        that dies without stopping leaves pins for the next one to adopt."""
        if self.datapath is not None:
            self.datapath.close(unload=True)
            self.datapath = None


def run_supervisor(plan: GatewayPlan, config_path: str) -> int:
    configure_logging(plan.config.observability.log_format, os.environ.get("LOG_LEVEL", "info"))
    raise_nofile_limit()  # before any socket or worker: workers inherit the raised limit
    supervisor = Supervisor(plan, config_path)
    return trio.run(supervisor.run)
