"""systemd integration: the sd_notify protocol as a real supervisor speaks it, and the unit file.

The supervisor runs as a real process with NOTIFY_SOCKET pointing at a unix datagram
socket this test owns (what systemd does for Type=notify), so every assertion is on the
datagrams systemd would receive. The unit file is checked with the real
`systemd-analyze verify` against a temporary root that holds the installed paths.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from running_gateway import BIN, ROOT, free_port

from gateway.config.schema import RuntimeConfig

UNIT = ROOT / "systemd" / "expressgateway.service"
WATCHDOG_USEC = 400_000
DRAIN_TIMEOUT_MS = 1000


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass
class Notification:
    received_usec: int
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """The systemd side of sd_notify: a bound unix datagram socket, messages in order."""

    sock: socket.socket
    path: str
    seen: list[Notification] = field(default_factory=list)

    def _receive(self, timeout_s: float) -> Notification | None:
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        note = Notification(monotonic_usec(), fields)
        self.seen.append(note)
        return note

    def wait_for(self, key: str, timeout_s: float, *, value: str = "1") -> Notification:
        """The next notification carrying key=value; the ones before it stay in `seen`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            note = self._receive(left)
            if note is not None and note.fields.get(key) == value:
                return note
        raise AssertionError(f"no {key}={value} within {timeout_s}s; got {self.summary()}")

    def collect(self, duration_s: float) -> list[Notification]:
        start = len(self.seen)
        deadline = time.monotonic() + duration_s
        while (left := deadline - time.monotonic()) > 0:
            self._receive(left)
        return self.seen[start:]

    def summary(self) -> list[dict[str, str]]:
        return [n.fields for n in self.seen[-20:]]


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    control: str
    config_path: Path
    log_path: Path
    port: int
    notify: NotifySocket

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "gatewayctl"), "--socket", self.control, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )


def gateway_config(port: int, backend_port: int, control: str) -> str:
    return f"""
[runtime]
workers = 1
control_socket = "{control}"
drain_timeout_ms = {DRAIN_TIMEOUT_MS}

[[listeners]]
name = "echo"
address = "127.0.0.1:{port}"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:{backend_port}"
"""


def echo_round_trip(port: int, payload: bytes, timeout_s: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


def _is_worker_of(pid: int, supervisor_pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return b"workers.main" in argv and str(supervisor_pid).encode() in argv


def kill_group(proc: subprocess.Popen[bytes], extra_pids: list[int]) -> None:
    """SIGKILL the supervisor's process group and any worker we saw, ignoring the dead."""
    ours = [pid for pid in extra_pids if _is_worker_of(pid, proc.pid)]  # pids get reused
    targets = [(os.killpg, proc.pid)] + [(os.kill, pid) for pid in ours]
    for kill, pid in targets:
        try:
            kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # sockaddr_un paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="eg-sd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def echo_backend() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "tools.demo_backends", "--tcp-echo", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        kill_group(proc, [])


@pytest.fixture
def gateway(short_tmp: Path, echo_backend: int) -> Iterator[Gateway]:
    """A real supervisor started the way systemd starts a Type=notify service."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(short_tmp / "notify.sock")
    sock.bind(notify_path)
    control = str(short_tmp / "ctl.sock")
    port = free_port()
    config_path = short_tmp / "gateway.toml"
    config_path.write_text(gateway_config(port, echo_backend, control))
    log_path = short_tmp / "gateway.log"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_path,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "LOG_LEVEL": "info",
    }
    env.pop("WATCHDOG_PID", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(BIN / "expressgateway"), str(config_path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown kills it whole
        )
    seen_pids: list[int] = []
    gw = Gateway(proc, control, config_path, log_path, port, NotifySocket(sock, notify_path))
    try:
        yield gw
    finally:
        if proc.poll() is None:
            try:
                seen_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        kill_group(proc, seen_pids)
        sock.close()


def test_ready_only_once_the_listener_relays(gateway: Gateway) -> None:
    ready = gateway.notify.wait_for("READY", 20)
    # READY=1 means "serving": right now, a connection through the listener is relayed.
    payload = os.urandom(100_000)
    assert echo_round_trip(gateway.port, payload, timeout_s=2.0) == payload, gateway.logs()
    assert ready.fields["MAINPID"] == str(gateway.proc.pid)
    assert ready.fields["STATUS"] == "generation 1: 1/1 workers ready"
    status = gateway.ctl("--json", "status")
    assert '"workers_ready": 1' in status.stdout and '"state": "running"' in status.stdout
    before = [n.fields for n in gateway.notify.seen[:-1]]
    assert not any("READY" in f or "STOPPING" in f for f in before), before


def test_watchdog_pings_every_half_period(gateway: Gateway) -> None:
    gateway.notify.wait_for("READY", 20)
    window_s = 1.5
    pings = [n for n in gateway.notify.collect(window_s) if n.fields.get("WATCHDOG") == "1"]
    expected = window_s / (WATCHDOG_USEC / 2 / 1e6)
    assert expected - 2 <= len(pings) <= expected + 2, gateway.notify.summary()
    gaps_usec = [b.received_usec - a.received_usec for a, b in itertools.pairwise(pings)]
    # Pinged every WATCHDOG_USEC/2; a gap of a whole WATCHDOG_USEC would make systemd abort us.
    assert max(gaps_usec) < WATCHDOG_USEC, gaps_usec


def _reload_notifications(gateway: Gateway) -> subprocess.CompletedProcess[str]:
    mark = len(gateway.notify.seen)
    before_usec = monotonic_usec()
    result = gateway.ctl("reload")
    after_usec = monotonic_usec()
    gateway.notify.wait_for("READY", 10)
    events = [n for n in gateway.notify.seen[mark:] if "WATCHDOG" not in n.fields]
    assert [sorted(n.fields) for n in events] == [
        ["MONOTONIC_USEC", "RELOADING"],
        ["MAINPID", "READY", "STATUS"],
    ], [n.fields for n in events]
    reloading = events[0]
    stamp_usec = int(reloading.fields["MONOTONIC_USEC"])
    # systemd matches RELOADING=1 to the reload it asked for by this CLOCK_MONOTONIC stamp.
    assert before_usec <= stamp_usec <= after_usec, (before_usec, stamp_usec, after_usec)
    return result


def test_reload_sends_reloading_with_monotonic_stamp_then_ready(gateway: Gateway) -> None:
    gateway.notify.wait_for("READY", 20)
    result = _reload_notifications(gateway)
    assert result.returncode == 0, result.stderr + gateway.logs()
    assert "generation: 2" in result.stdout
    assert gateway.notify.seen[-1].fields["STATUS"] == "generation 2: 1/1 workers ready"
    payload = os.urandom(10_000)
    assert echo_round_trip(gateway.port, payload, timeout_s=2.0) == payload


def test_refused_reload_still_ends_with_ready(gateway: Gateway) -> None:
    gateway.notify.wait_for("READY", 20)
    gateway.config_path.write_text(gateway.config_path.read_text() + "\nbogus_key = 1\n")
    result = _reload_notifications(gateway)
    assert result.returncode == 1 and "bogus_key" in result.stderr, result.stderr
    # systemd leaves "reloading" only on READY=1; the old generation keeps serving.
    assert gateway.notify.seen[-1].fields["STATUS"] == "generation 1: 1/1 workers ready"
    payload = os.urandom(10_000)
    assert echo_round_trip(gateway.port, payload, timeout_s=2.0) == payload


def test_sigterm_sends_stopping_and_exits_zero(gateway: Gateway) -> None:
    gateway.notify.wait_for("READY", 20)
    workers = psutil.Process(gateway.proc.pid).children(recursive=True)
    assert workers
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.notify.wait_for("STOPPING", 5)
    # A graceful stop drains within drain_timeout_ms; systemd's TimeoutStopSec is the backstop.
    assert gateway.proc.wait(timeout=DRAIN_TIMEOUT_MS / 1000 + 8) == 0, gateway.logs()
    _gone, alive = psutil.wait_procs(workers, timeout=2)
    assert not alive, alive
    after = [n.fields for n in gateway.notify.collect(0.2)]
    assert not any("READY" in f for f in after), after


# ---- the unit file -------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys kept in order."""
    entries, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, value = line.split("=", 1)
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(entries: list[tuple[str, str, str]], key: str) -> str:
    values = [v for _, k, v in entries if k == key]
    assert len(values) == 1, (key, values)
    return values[0]


def exec_paths(entries: list[tuple[str, str, str]]) -> list[str]:
    """The executable of every Exec*= line, its '-', '+', '@', ':', '!' prefixes removed."""
    return [v.split()[0].lstrip("-+@:!") for _, k, v in entries if k.startswith("Exec")]


def verify_unit(unit_text: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of `unit_text` installed in a temporary root.

    The root holds the distribution's units (for the targets the unit names) and an
    executable stub at every path the Exec lines name, so verify checks the unit as
    installed instead of complaining that /opt/expressgateway does not exist here.
    """
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for path in exec_paths(unit_entries(unit_text)):
        stub = root / path.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    target = root / "etc/systemd/system/expressgateway.service"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit_text)
    return subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            "/etc/systemd/system/expressgateway.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "apt-get install systemd"
    text = UNIT.read_text()
    result = verify_unit(text, tmp_path / "good")
    # verify exits 0 even for unknown keys or unparsable values ("..., ignoring"): any
    # line about our unit counts as a failure.
    complaints = [line for line in result.stderr.splitlines() if "expressgateway" in line]
    assert result.returncode == 0 and not complaints, result.stderr
    # The host tools the privileged ExecStartPre runs exist where the unit says.
    for path in exec_paths(unit_entries(text)):
        if not path.startswith("/opt/"):
            assert os.access(path, os.X_OK), path


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy")
    result = verify_unit(broken, tmp_path / "broken")
    assert "Failed to parse service type" in result.stderr, result.stderr


def test_unit_matches_the_supervisor_contract() -> None:
    entries = unit_entries(UNIT.read_text())
    assert unit_value(entries, "Type") == "notify"
    assert unit_value(entries, "NotifyAccess") == "main"
    assert unit_value(entries, "KillMode") == "mixed"
    runtime_dir = unit_value(entries, "RuntimeDirectory")
    control = RuntimeConfig().control_socket
    assert control == f"/run/{runtime_dir}/control.sock"
    reload_cmd = unit_value(entries, "ExecReload").split()
    assert reload_cmd[-1] == "reload" and reload_cmd[reload_cmd.index("--socket") + 1] == control
    start = unit_value(entries, "ExecStart").split()
    checks = [v.split() for _, k, v in entries if k == "ExecStartPre" and "--check" in v]
    assert checks == [[start[0], "--check", *start[1:]]]
    # The stop budget must cover the default drain plus the SIGTERM/SIGKILL ladder.
    stop_s = int(re.fullmatch(r"(\d+)s", unit_value(entries, "TimeoutStopSec")).group(1))  # type: ignore[union-attr]
    assert stop_s * 1000 >= RuntimeConfig().drain_timeout_ms + 2 * 2000 + 5000
    caps = set(unit_value(entries, "CapabilityBoundingSet").split())
    # uid 0 with a bounded set, so that workers can switch to [runtime] worker_user
    assert not [k for _, k, _v in entries if k in ("User", "Group", "AmbientCapabilities")]
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE"} <= caps
    assert not caps & {"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"}
    assert unit_value(entries, "NoNewPrivileges") == "yes"
    assert unit_value(entries, "ProtectSystem") == "strict"
