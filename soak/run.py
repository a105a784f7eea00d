"""One soak run from start to report: backends, gateway, load clients, sampler, chaos.

Owns the order of things and the files of a run's output directory:
`gateway.toml`, `gateway.log`, `backend-*.log`, `clients/<scenario>.jsonl`,
`meta.json`, `samples.jsonl`, `chaos.jsonl`, `run_end.json`, `report.json`, `report.html`;
`reanalyze` judges a run again from those files alone. Every process it starts it
stops, by its own handle, whatever happens. It must never judge (that is `analysis`).
"""

from __future__ import annotations

import json
import random
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from soak import chaos_schedule as cs
from soak import gateway_config, sampler
from soak.analysis import analyze
from soak.backends import Backend
from soak.chaos_actions import ChaosEnv, ChaosOutcome, perform
from soak.gateway_process import AttachedGateway, GatewayError, GatewayHandle, OwnedGateway
from soak.profiles import Profile
from soak.report import Analysis, write_html, write_json
from soak.scenario import Scenario
from tools.make_certs import make_certs
from tools.ports import free_port


@dataclass
class RunOptions:
    profile: Profile
    scenarios: list[Scenario]
    chaos_kinds: tuple[str, ...]
    out: Path
    seed: int = 1
    scale: float = 1.0
    client_cpus: str = ""
    gateway_cpus: str = ""
    access_log: bool = False
    attach_control: str = ""
    attach_admin_url: str = ""
    attach_targets: dict[str, str] = field(default_factory=dict)
    attach_ca: str = ""  # the CA of an attached gateway's TLS listeners
    command: str = ""


def _say(msg: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


class _Run:
    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.p = opts.profile
        self.out = opts.out
        self.backends: list[Backend] = []
        self.clients: dict[str, subprocess.Popen[bytes]] = {}
        self.outcomes: list[ChaosOutcome] = []
        self.t0_mono = 0.0
        self.t0_wall = 0.0
        self.t0_mono_trio = 0.0
        self.ca_path = opts.attach_ca

    def clock(self) -> float:
        return time.monotonic() - self.t0_mono

    # ---- setup ---------------------------------------------------------------------

    def start_owned(self) -> tuple[OwnedGateway, dict[str, str], ChaosEnv]:
        opts = self.opts
        self.backends = [Backend.on_free_ports(n, self.out) for n in ("A", "B")]
        for b in self.backends:
            b.start()
        ports = gateway_config.GatewayPorts(
            control_socket=str(self.out / "ctl.sock"),
            metrics_port=free_port(),
            listeners={
                s.name: free_port(socket.SOCK_DGRAM if s.front == "udp" else socket.SOCK_STREAM)
                for s in opts.scenarios
            },
        )
        workers = f"[{opts.gateway_cpus}]" if opts.gateway_cpus else '"auto"'
        certs = make_certs(self.out / "certs") if any(s.tls for s in opts.scenarios) else None
        self.ca_path = str(certs.ca_cert) if certs else ""
        kw: dict[str, Any] = {"workers": workers, "access_log": opts.access_log, "certs": certs}
        valid = gateway_config.render(opts.scenarios, self.backends, ports, **kw)
        invalid = gateway_config.render(opts.scenarios, self.backends, ports, invalid=True, **kw)
        config_path = self.out / "gateway.toml"
        config_path.write_text(valid)
        gateway = OwnedGateway(
            config_path, ports.control_socket, ports.metrics_port, self.out / "gateway.log"
        )
        gateway.start()
        targets = {s.name: f"127.0.0.1:{ports.listeners[s.name]}" for s in opts.scenarios}
        env = ChaosEnv(
            gateway, self.backends[1], config_path, valid, invalid,
            random.Random(opts.seed + 1), self.p.backend_down_s, self.p.flap_s,
        )  # fmt: skip
        return gateway, targets, env

    def start_attached(self) -> tuple[AttachedGateway, dict[str, str], ChaosEnv]:
        opts = self.opts
        gateway = AttachedGateway(opts.attach_control, opts.attach_admin_url)
        if not gateway.wait_settled(10.0):
            raise GatewayError(
                f"no running, settled gateway answers at {opts.attach_control} "
                "(gatewayctl status: state running, every worker ready, none draining)"
            )
        env = ChaosEnv(
            gateway, None, None, "", "", random.Random(opts.seed + 1),
            self.p.backend_down_s, self.p.flap_s,
        )  # fmt: skip
        return gateway, dict(opts.attach_targets), env

    def start_clients(self, targets: dict[str, str]) -> None:
        (self.out / "clients").mkdir(exist_ok=True)
        until = self.t0_wall + self.p.duration_s
        for i, s in enumerate(self.opts.scenarios):
            args = [
                sys.executable, "-m", "soak.client_main",
                "--scenario", s.name, "--target", targets[s.name], "--until", f"{until:.3f}",
                "--out", str(self.out / "clients" / f"{s.name}.jsonl"),
                "--scale", str(self.opts.scale), "--seed", str(self.opts.seed * 1000 + i),
                "--interval", "1" if self.p.sample_s <= 5 else "5",
            ]  # fmt: skip
            if self.opts.client_cpus:
                args += ["--cpus", self.opts.client_cpus]
            if self.ca_path:
                args += ["--ca", self.ca_path]
            with open(self.out / "clients" / f"{s.name}.log", "ab") as log:
                self.clients[s.name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    # ---- the run -------------------------------------------------------------------

    async def serve_sampling(self, gateway: GatewayHandle, supervisor_pid: int) -> None:
        with open(self.out / "samples.jsonl", "a") as f:
            k = 0
            while True:
                await trio.sleep_until(self.t0_mono_trio + k * self.p.sample_s)
                sample = await trio.to_thread.run_sync(
                    sampler.take, supervisor_pid, gateway.admin_url, self.clock()
                )
                f.write(json.dumps(sample) + "\n")
                f.flush()
                if k % max(1, round(60 / self.p.sample_s)) == 0:
                    procs = sample["procs"]
                    _say(
                        f"t={sample['t']:.0f}s procs={len(procs)} "
                        f"rss={sum(p['rss'] for p in procs) / 2**20:.0f}MiB "
                        f"fds={sum(p['fds'] for p in procs)} chaos={len(self.outcomes)}"
                    )
                k += 1

    async def serve_chaos(self, env: ChaosEnv) -> None:
        events = cs.plan(
            self.opts.chaos_kinds, self.p.warmup_s, self.p.chaos_end_s, self.p.chaos_every_s,
            random.Random(self.opts.seed),
        )  # fmt: skip
        with open(self.out / "chaos.jsonl", "a") as f:
            for event in events:
                await trio.sleep_until(self.t0_mono_trio + event.at_s)
                outcome = await trio.to_thread.run_sync(perform, event, env, self.clock)
                self.outcomes.append(outcome)
                f.write(json.dumps(outcome.to_json()) + "\n")
                f.flush()
                _say(f"chaos #{outcome.seq} {outcome.kind} ok={outcome.ok}: {outcome.detail}")

    async def drive(self, gateway: GatewayHandle, env: ChaosEnv, supervisor_pid: int) -> None:
        self.t0_mono_trio = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.serve_sampling, gateway, supervisor_pid)
            nursery.start_soon(self.serve_chaos, env)
            await trio.sleep(self.p.duration_s)
            nursery.cancel_scope.cancel()

    def stop_clients(self) -> None:
        deadline = time.monotonic() + 30
        for proc in self.clients.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run(opts: RunOptions) -> Analysis:
    opts.out.mkdir(parents=True, exist_ok=True)
    r = _Run(opts)
    gateway: GatewayHandle | None = None
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    survived = False
    try:
        if opts.attach_control:
            gateway, targets, env = r.start_attached()
        else:
            gateway, targets, env = r.start_owned()
        supervisor_pid = gateway.supervisor_pid()
        _say(f"gateway up (supervisor pid {supervisor_pid}); load for {opts.profile.duration_s:g}s")
        r.t0_mono, r.t0_wall = time.monotonic(), time.time()
        (opts.out / "meta.json").write_text(
            json.dumps(_meta(opts, started_at, r.t0_wall), indent=1)
        )
        r.start_clients(targets)
        trio.run(r.drive, gateway, env, supervisor_pid)
        r.stop_clients()
        survived = gateway.alive()
        with open(opts.out / "samples.jsonl", "a") as f:
            f.write(json.dumps(sampler.take(supervisor_pid, gateway.admin_url, r.clock())) + "\n")
    finally:
        for proc in r.clients.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if isinstance(gateway, OwnedGateway):
            gateway.stop()
        for b in r.backends:
            b.kill()
    codes = {name: proc.returncode for name, proc in r.clients.items()}
    end = {"gateway_survived": survived, "client_exit_codes": codes}
    (opts.out / "run_end.json").write_text(json.dumps(end))
    return reanalyze(opts.out)


def _meta(opts: RunOptions, started_at: str, t0_wall: float) -> dict[str, Any]:
    return {
        "profile": opts.profile.name,
        "duration_s": opts.profile.duration_s,
        "sample_s": opts.profile.sample_s,
        "warmup_s": opts.profile.warmup_s,
        "chaos_every_s": opts.profile.chaos_every_s,
        "seed": opts.seed,
        "scale": opts.scale,
        "scenarios": [s.name for s in opts.scenarios],
        "chaos_kinds": list(opts.chaos_kinds),
        "started_at": started_at,
        "t0_wall": t0_wall,
        "command": opts.command or shlex.join(sys.argv),
        "attached": bool(opts.attach_control),
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reanalyze(out: Path) -> Analysis:
    """Judge a run from its recorded files and (re)write report.json and report.html; works
    on a run that was cut short (its end is then judged as the gateway not surviving)."""
    meta = json.loads((out / "meta.json").read_text())
    end_path = out / "run_end.json"
    end = json.loads(end_path.read_text()) if end_path.exists() else {}
    clients = {name: _jsonl(out / "clients" / f"{name}.jsonl") for name in meta["scenarios"]}
    outcomes = [ChaosOutcome(**d) for d in _jsonl(out / "chaos.jsonl")]
    analysis = analyze(
        meta,
        _jsonl(out / "samples.jsonl"),
        clients,
        outcomes,
        bool(end.get("gateway_survived", False)),
        end.get("client_exit_codes", {}),
    )
    write_json(analysis, out / "report.json")
    write_html(analysis, out / "report.html")
    return analysis
