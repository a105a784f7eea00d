"""The process model with real processes on loopback: pinning, relay, reload, drain, crashes."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from running_gateway import echo_once, free_port, on_cpu, tcp_config


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_one_pinned_worker_per_cpu_and_relay(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    workers = gw.workers()
    cpus = sorted(os.sched_getaffinity(0))
    assert sorted(w["cpu"] for w in workers) == cpus
    for w in workers:
        assert cpus_allowed(w["pid"]) == str(w["cpu"])
        assert w["state"] == "ready" and w["generation"] == 1
    payload = os.urandom(300_000)
    assert echo_once(port, payload) == payload  # half-close: the echo completes after our FIN
    status = gw.ctl_json("status")["data"]
    assert status["workers_ready"] == status["workers_total"] == len(cpus)
    assert oct(os.stat(gw.control).st_mode & 0o777) == "0o600"


def test_check_and_start_with_invalid_config_exit_2_before_listening(tmp_path) -> None:
    import subprocess

    from running_gateway import BIN

    port = free_port()
    bad = tmp_path / "bad.toml"
    bad.write_text(tcp_config(port, [9]).replace("drain_timeout_ms = 3000", "drain_timeout_ms = 0"))
    out = subprocess.run(
        [str(BIN / "expressgateway"), "--check", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "runtime.drain_timeout_ms: must be 100..300000, got 0" in out.stderr
    started = time.monotonic()
    out = subprocess.run(
        [str(BIN / "expressgateway"), str(bad)], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 2 and time.monotonic() - started < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_version() -> None:
    import subprocess

    from running_gateway import BIN

    out = subprocess.run([str(BIN / "expressgateway"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("expressgateway 0.")


class Load:
    """Many short TCP connections in threads; every byte must come back."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, i: int) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[i % len(cpus)]})  # this thread only: load on every worker
        n = 0
        while not self._stop.is_set():
            payload = f"t{i}-{n}-".encode() * 50
            try:
                got = echo_once(self.port, payload, timeout_s=10)
                if got != payload:
                    self.failures.append(f"mismatch {len(got)}/{len(payload)}")
                else:
                    self.ok += 1
            except OSError as exc:
                self.failures.append(repr(exc))
            n += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=20)


@pytest.mark.slow
def test_twenty_reloads_under_load_lose_nothing(gateway_factory, echo_backends) -> None:
    port = free_port()
    # Short connections finish long before the drain budget; the budget only has to
    # cover a connection stalled by CPU contention while two new workers boot.
    gw = gateway_factory.start(
        tcp_config(port, echo_backends).replace(
            "drain_timeout_ms = 3000", "drain_timeout_ms = 5000"
        )
    )
    with Load(port) as load:
        for i in range(20):
            out = gw.ctl("reload")
            assert out.returncode == 0, out.stderr
            assert f"generation: {i + 2}" in out.stdout
        time.sleep(0.5)
    assert load.failures == []
    assert load.ok > 100, f"only {load.ok} connections completed during 20 reloads"
    assert gw.ctl_json("status")["data"]["reloads"] == {"ok": 20, "failed": 0}


def test_long_lived_connection_survives_reload_until_drain_budget(
    gateway_factory, echo_backends
) -> None:
    port = free_port()
    gw = gateway_factory.start(
        tcp_config(port, echo_backends).replace(
            "drain_timeout_ms = 3000", "drain_timeout_ms = 2000"
        )
    )
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"before")
    assert conn.recv(100) == b"before"
    reloaded_at = time.monotonic()
    assert gw.ctl("reload").returncode == 0
    conn.sendall(b"after-reload")
    assert conn.recv(100) == b"after-reload"
    conn.settimeout(10)
    assert conn.recv(100) == b""  # a clean FIN at the drain deadline, not a reset
    waited = time.monotonic() - reloaded_at
    assert 1.5 <= waited <= 6, f"closed after {waited:.2f}s; drain budget is 2s"
    conn.close()
    assert echo_once(port, b"new") == b"new"


def test_a_second_reload_keeps_the_draining_generations_budget(
    gateway_factory, echo_backends
) -> None:
    """Reloads faster than the drain budget: the generation drained by the first keeps its
    connections until its own deadline (a repeated drain used to end it at once)."""
    port = free_port()
    gw = gateway_factory.start(
        tcp_config(port, echo_backends).replace(
            "drain_timeout_ms = 3000", "drain_timeout_ms = 6000"
        )
    )
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"before")
    assert conn.recv(100) == b"before"
    reloaded_at = time.monotonic()
    assert gw.ctl("reload").returncode == 0
    time.sleep(0.3)
    assert gw.ctl("reload").returncode == 0
    second_done = time.monotonic() - reloaded_at
    assert second_done < 5, f"the second reload took until {second_done:.2f}s: inconclusive"
    conn.sendall(b"after-two-reloads")
    assert conn.recv(100) == b"after-two-reloads"
    conn.settimeout(15)
    assert conn.recv(100) == b""  # the first drain's deadline, a clean FIN
    waited = time.monotonic() - reloaded_at
    assert 5.5 <= waited <= 12, f"closed after {waited:.2f}s; drain budget is 6s"
    conn.close()
    assert echo_once(port, b"new") == b"new"


def test_past_max_draining_generations_the_oldest_stops_now(gateway_factory, echo_backends) -> None:
    """Cap 1, a 30 s budget: a second reload while the first generation still drains a
    connection stops that generation at once (its connection closed, `drain_cut_short`);
    the generation drained by the second reload keeps its own connection."""
    port = free_port()
    config = tcp_config(port, echo_backends).replace(
        "drain_timeout_ms = 3000", "drain_timeout_ms = 30000\nmax_draining_generations = 1"
    )
    gw = gateway_factory.start(config)
    oldest = socket.create_connection(("127.0.0.1", port), timeout=10)
    oldest.sendall(b"gen1")
    assert oldest.recv(100) == b"gen1"
    assert gw.ctl("reload").returncode == 0
    younger = socket.create_connection(("127.0.0.1", port), timeout=10)
    younger.sendall(b"gen2")
    assert younger.recv(100) == b"gen2"
    oldest.sendall(b"still")  # one generation draining: within the cap
    assert oldest.recv(100) == b"still"
    cut_at = time.monotonic()
    assert gw.ctl("reload").returncode == 0
    oldest.settimeout(10)
    try:
        assert oldest.recv(100) == b""
    except ConnectionResetError:
        pass  # cut while the backend side still had bytes: a reset is a close too
    assert time.monotonic() - cut_at < 5, "the oldest generation was not stopped"
    cuts = gw.events("drain_cut_short")
    assert len(cuts) == 1 and cuts[0]["generation"] == 1, cuts
    younger.sendall(b"still-here")
    assert younger.recv(100) == b"still-here"
    oldest.close()
    younger.close()
    assert echo_once(port, b"new") == b"new"


def test_sigkill_worker_respawns_within_a_second_others_untouched(
    gateway_factory, echo_backends
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs 2 CPUs (the machine kind has 2)")
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    # Long-lived connections until both workers hold some.
    conns = []
    for i in range(40):
        with on_cpu(i % 2):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"x")
        assert c.recv(10) == b"x"
        conns.append(c)
    time.sleep(1.2)  # one heartbeat, so `workers` shows who holds what
    rows = gw.workers()
    victim = max(rows, key=lambda w: w["active_connections"])
    survivor = next(w for w in rows if w["pid"] != victim["pid"])
    assert survivor["active_connections"] > 0, rows
    killed_at = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    while True:
        rows = gw.ready_workers()
        if len(rows) == 2 and victim["pid"] not in {w["pid"] for w in rows}:
            break
        assert time.monotonic() - killed_at < 1.0 + 1.5, (
            f"no respawn: {rows}"
        )  # 1 s + process start
        time.sleep(0.05)
    back_after = time.monotonic() - killed_at
    alive = 0
    for c in conns:
        try:
            c.sendall(b"y")
            if c.recv(10) == b"y":
                alive += 1
        except OSError:
            pass
        c.close()
    assert alive == survivor["active_connections"], (
        f"{alive} connections of the surviving worker answered"
    )
    exited = gw.events("worker_exited")
    assert any(e["pid"] == victim["pid"] and e["how"] == "signal SIGKILL" for e in exited), exited
    assert back_after < 2.5
    assert gw.ctl_json("status")["data"]["worker_restarts"] == 1


def test_drain_worker_under_load(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    before = {w["id"]: w["pid"] for w in gw.workers()}
    with Load(port) as load:
        time.sleep(0.5)
        out = gw.ctl("drain", "0", "--timeout", "2")
        assert out.returncode == 0, out.stderr
        time.sleep(0.5)
    assert load.failures == []
    after = {w["id"]: w["pid"] for w in gw.ready_workers()}
    assert after[0] != before[0]
    assert after.get(1) == before.get(1)


def test_drain_no_replace_leaves_cpu_without_worker(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    assert gw.ctl("drain", "1", "--no-replace", "--timeout", "1").returncode == 0
    deadline = time.monotonic() + 5
    while any(w["id"] == 1 for w in gw.workers()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for i in range(30):  # every connection still finds a worker
        assert echo_once(port, b"%d" % i) == b"%d" % i
    assert gw.ctl_json("status")["data"]["vacant_slots"] == [1]
    assert gw.ctl("reload").returncode == 0  # a reload fills every CPU again
    assert sorted(w["id"] for w in gw.ready_workers()) == [0, 1]


def test_invalid_reload_keeps_old_generation(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    good = gw.config_path.read_text()
    gw.config_path.write_text(
        good.replace(f'address = "127.0.0.1:{echo_backends[0]}"', 'address = "127.0.0.1:0"')
        + "\nbogus = 1\n"
    )
    out = gw.ctl("reload")
    assert out.returncode == 1
    assert "bogus: unknown key" in out.stderr
    gw.config_path.write_text(
        good.replace("drain_timeout_ms = 3000", "drain_timeout_ms = 1\nconnect_timeout_ms = 1")
    )
    out = gw.ctl("reload")
    assert out.returncode == 1
    assert "runtime.drain_timeout_ms: must be 100..300000, got 1" in out.stderr
    assert "runtime.connect_timeout_ms: must be 100..60000, got 1" in out.stderr
    assert echo_once(port, b"still-serving") == b"still-serving"
    status = gw.ctl_json("status")["data"]
    assert status["generation"] == 1 and status["reloads"]["failed"] == 2


def test_reload_that_cannot_bind_keeps_old_generation(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    gw.config_path.write_text(
        gw.config_path.read_text()
        + f'\n[[listeners]]\nname = "two"\naddress = "127.0.0.1:{taken}"\nprotocol = "tcp"\n[[listeners.backends]]\naddress = "127.0.0.1:{echo_backends[0]}"\n'
    )
    out = gw.ctl("reload")
    blocker.close()
    assert out.returncode == 1 and f"cannot listen on tcp 127.0.0.1:{taken}" in out.stderr
    assert echo_once(port, b"ok") == b"ok"
    assert gw.ctl_json("status")["data"]["generation"] == 1


def test_reload_adds_and_removes_listeners(gateway_factory, echo_backends) -> None:
    port, port2 = free_port(), free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    text = gw.config_path.read_text().replace(f'127.0.0.1:{port}"', f'127.0.0.1:{port2}"')
    gw.config_path.write_text(text)
    out = gw.ctl_json("reload")
    assert out["ok"], out
    assert out["data"]["diff"]["listeners_changed"] == ["echo"]
    assert echo_once(port2, b"moved") == b"moved"
    deadline = time.monotonic() + 8
    while True:  # the old address closes once the old generation has drained
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "old listener still open"
        time.sleep(0.2)


def test_connect_retry_skips_dead_backend(gateway_factory, echo_backends) -> None:
    port = free_port()
    dead = free_port()
    gw = gateway_factory.start(tcp_config(port, [dead, *echo_backends]))
    for i in range(20):
        assert echo_once(port, b"r%d" % i) == b"r%d" % i
    assert gw.ctl("workers").returncode == 0


def test_all_backends_down_closes_connection_without_hanging(gateway_factory) -> None:
    port = free_port()
    gateway_factory.start(tcp_config(port, [free_port(), free_port()]))
    started = time.monotonic()
    try:
        answer = echo_once(port, b"nobody")
    except OSError as exc:
        # Closed with our unread bytes in its buffer, the kernel sends RST; depending on
        # when it lands, our send, shutdown or recv reports it.
        assert exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE), exc
        answer = b""
    assert answer == b""
    assert time.monotonic() - started < 5  # 2 refused connects, no hanging


def test_graceful_stop_and_workers_die_with_supervisor(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    pids = [w["pid"] for w in gw.workers()]
    assert gw.ctl("stop").returncode == 0
    assert gw.proc.wait(timeout=15) == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
        )
    assert not os.path.exists(gw.control)


def test_workers_die_when_supervisor_is_killed(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    pids = [w["pid"] for w in gw.workers()]
    gw.proc.kill()
    gw.proc.wait()
    deadline = time.monotonic() + 5
    while any(
        Path(f"/proc/{p}").exists() and "State:\tZ" not in Path(f"/proc/{p}/status").read_text()
        for p in pids
    ):
        assert time.monotonic() < deadline, "orphaned workers survived their supervisor"
        time.sleep(0.05)


def test_sighup_reloads_and_sigterm_drains(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while gw.ctl_json("status")["data"]["generation"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(b"held")
    assert conn.recv(10) == b"held"
    gw.proc.send_signal(signal.SIGTERM)
    conn.sendall(b"during-drain")  # in-flight work still flows while draining
    assert conn.recv(20) == b"during-drain"
    conn.close()
    assert gw.proc.wait(timeout=15) == 0


def test_gatewayctl_errors(gateway_factory, echo_backends, tmp_path) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    out = gw.ctl("drain", "7")
    assert out.returncode == 1 and "no ready worker 7" in out.stderr
    out = gw.ctl("kernel", "stats")
    assert out.returncode == 1 and "kernel datapath is not enabled" in out.stderr
    import subprocess

    from running_gateway import BIN

    out = subprocess.run(
        [str(BIN / "gatewayctl"), "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 69 and "no supervisor" in out.stderr
    # Junk on the control socket gets an error answer and the server keeps going.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(gw.control)
        s.sendall(b'{"cmd": "explode"}\n')
        answer = s.recv(4096)
    assert b'"ok":false' in answer and b"invalid control request" in answer
    assert gw.ctl("status").returncode == 0


def test_each_listener_keeps_its_own_drain_budget(gateway_factory, echo_backends) -> None:
    short_port, long_port = free_port(), free_port()
    text = tcp_config(short_port, echo_backends, extra="drain_timeout_ms = 1000")
    text += f'\n[[listeners]]\nname = "long"\naddress = "127.0.0.1:{long_port}"\nprotocol = "tcp"\ndrain_timeout_ms = 4000\n[[listeners.backends]]\naddress = "127.0.0.1:{echo_backends[0]}"\n'
    gw = gateway_factory.start(text)
    conns = {}
    for name, port in (("short", short_port), ("long", long_port)):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        conns[name] = c
    assert gw.ctl("reload").returncode == 0
    started = time.monotonic()  # the old generation's drain began just before the answer
    closed_after = {}
    for name, c in conns.items():
        assert c.recv(10) == b""  # a clean FIN at this listener's deadline
        closed_after[name] = time.monotonic() - started
        c.close()
    assert closed_after["short"] <= 3.0, closed_after
    assert 3.0 <= closed_after["long"] <= 7.0, closed_after
    assert closed_after["long"] - closed_after["short"] >= 2.0, closed_after


@pytest.mark.slow
def test_workers_outlive_a_quiet_supervisor(gateway_factory, echo_backends) -> None:
    """Regression: PR_SET_PDEATHSIG follows the *thread* that forked the worker. Workers
    forked from a trio cache thread were killed when that idle thread retired (~10 s)."""
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    before = sorted(w["pid"] for w in gw.workers())
    time.sleep(12)
    assert sorted(w["pid"] for w in gw.ready_workers()) == before
    assert gw.ctl_json("status")["data"]["worker_restarts"] == 0
    assert echo_once(port, b"still") == b"still"


def _worker_pids_of(supervisor_pid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"workers.main" in argv and str(supervisor_pid).encode() in argv:
            pids.add(int(entry.name))
    return pids


def test_reload_whose_new_generation_never_gets_ready_keeps_the_old(
    gateway_factory, echo_backends
) -> None:
    port = free_port()
    text = tcp_config(port, echo_backends, runtime="worker_boot_timeout_ms = 1500")
    gw = gateway_factory.start(text)
    old = _worker_pids_of(gw.proc.pid)
    assert len(old) == 2
    stopped: set[int] = set()
    done = threading.Event()

    def freeze_new_workers() -> None:  # a real boot that never finishes: SIGSTOP
        while not done.is_set():
            for pid in _worker_pids_of(gw.proc.pid) - old - stopped:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    freezer = threading.Thread(target=freeze_new_workers, daemon=True)
    freezer.start()
    try:
        out = gw.ctl("reload")
    finally:
        done.set()
        freezer.join()
    assert out.returncode == 1, out.stdout
    assert "new generation failed to boot; old generation keeps serving" in out.stderr
    assert "not ready within 1.5s" in out.stderr
    assert stopped, "the test never saw the new workers"
    deadline = time.monotonic() + 5
    while any(
        Path(f"/proc/{p}").exists() and "State:\tZ" not in Path(f"/proc/{p}/status").read_text()
        for p in stopped
    ):
        assert time.monotonic() < deadline, "the failed generation was not cleaned up"
        time.sleep(0.05)
    status = gw.ctl_json("status")["data"]
    assert status["generation"] == 1 and status["reloads"]["failed"] == 1
    assert _worker_pids_of(gw.proc.pid) == old
    for i in range(10):
        assert echo_once(port, b"old%d" % i) == b"old%d" % i


@pytest.mark.slow
def test_crash_loop_is_reported_in_status(gateway_factory, echo_backends) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    for _ in range(7):
        victim = next(w for w in gw.ready_workers() if w["id"] == 0)
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while not any(w["id"] == 0 and w["pid"] != victim["pid"] for w in gw.ready_workers()):
            assert time.monotonic() < deadline, "worker 0 did not come back"
            time.sleep(0.05)
    status = gw.ctl_json("status")["data"]
    assert status["crash_loop_slots"] == [0], status
    assert status["worker_restarts"] == 7
    assert any(e.get("slot") == 0 for e in gw.events("worker_crash_loop"))
    assert echo_once(port, b"alive") == b"alive"
