"""The worker template (zygote): workers forked from it are the processes an exec spawn
makes (parent, fds, argv, session, pinning); it is restarted when killed, the fallback is
a fresh interpreter, and a zygote whose code changed on disk is replaced at the reload."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from running_gateway import echo_once, free_port, tcp_config

import workers.proc_title


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ppid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def _sid(pid: int) -> int:
    return int(_stat_fields(pid)[3])


def _fds(pid: int) -> dict[int, str]:
    fds = {}
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            fds[int(entry.name)] = os.readlink(entry)
        except OSError:
            continue
    return fds


def _shape(worker_pid: int, supervisor_pid: int) -> list[str]:
    """The worker's fds by kind. A socket the supervisor also holds (a listening socket)
    must have the supervisor's number: Boot names it by number."""
    sup = {target: fd for fd, target in _fds(supervisor_pid).items()}
    shape = []
    for fd, target in _fds(worker_pid).items():
        if fd <= 2:
            shape.append(f"std{fd}")
        elif target in sup and target.startswith("socket:"):  # anon inodes share names
            assert sup[target] == fd, (fd, target, sup[target])
            shape.append("supervisor's socket")
        elif target.startswith(("socket:", "pipe:")):
            shape.append(target.split(":")[0])
        else:
            shape.append(target)
    return sorted(shape)


def _started_by(gw, workers: list[dict]) -> set[str]:
    pids = {w["pid"] for w in workers}  # both gateways of a test append to one log
    return {e["started_by"] for e in gw.events("worker_started") if e.get("pid") in pids}


def _zygote(gw) -> dict:
    return gw.ctl_json("status")["data"]["zygote"]


def _wait_zygote_ready(gw, timeout_s: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while (z := _zygote(gw))["state"] != "ready":
        assert time.monotonic() < deadline, z
        time.sleep(0.05)
    return z


@pytest.mark.slow  # two gateways, one of them exec-spawned
def test_forked_workers_are_the_processes_an_exec_spawn_makes(
    gateway_factory, echo_backends
) -> None:
    shapes = {}
    for zygote in ("true", "false"):
        port = free_port()
        gw = gateway_factory.start(
            tcp_config(port, echo_backends, runtime=f"worker_zygote = {zygote}")
        )
        sup = gw.proc.pid
        z = _zygote(gw)
        workers = gw.workers()
        assert echo_once(port, b"hello") == b"hello"
        for w in workers:
            pid = w["pid"]
            assert _ppid(pid) == sup  # the supervisor's child, reaped by it
            assert _sid(pid) == pid  # a session of its own
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:4] == [b"-m", b"workers.main", b"--control-fd"], argv
            assert str(sup).encode() in argv
            assert os.sched_getaffinity(pid) == {w["cpu"]}
        # Worker 0 and 1 share no fd: neither holds the other's control socket or sockets.
        held = [set(_fds(w["pid"]).values()) - set(_fds(sup).values()) for w in workers]
        own = [{t for t in h if t.startswith("socket:")} for h in held]
        assert not (own[0] & own[1]), own
        # The echo's client and backend sockets may linger a moment in its worker: the
        # fewest fds over a second is the worker's own layout.
        samples = []
        for _ in range(10):
            samples.append(sorted(_shape(w["pid"], sup) for w in workers))
            time.sleep(0.1)
        shapes[zygote] = min(samples, key=lambda shape: sum(map(len, shape)))
        if zygote == "true":
            assert z["state"] == "ready" and z["forks"] == len(workers), z
            assert z["fallbacks"] == 0, z
            zpid = z["pid"]
            text = gw.ctl("status").stdout  # what an operator reads
            assert f"zygote: ready pid {zpid} " in text and "worker template" in text, text
            assert _ppid(zpid) == sup
            # Not pinned to one worker's CPU: the supervisor's own set.
            assert os.sched_getaffinity(zpid) == os.sched_getaffinity(sup)
            zfds = _fds(zpid)
            assert sorted(zfds) == [0, 1, 2, min(set(zfds) - {0, 1, 2})], zfds  # one socket
            assert not any(zfds[max(zfds)] in _fds(w["pid"]).values() for w in workers)
            assert _started_by(gw, workers) == {"zygote"}
            gw.proc.kill()  # the zygote dies with its supervisor, as the workers do
            gw.proc.wait()
            deadline = time.monotonic() + 5
            while (
                Path(f"/proc/{zpid}").exists()
                and "State:\tZ" not in Path(f"/proc/{zpid}/status").read_text()
            ):
                assert time.monotonic() < deadline, "the zygote outlived its supervisor"
                time.sleep(0.05)
        else:
            assert z["state"] == "disabled" and z["pid"] is None, z
            assert _started_by(gw, workers) == {"exec"}
    assert shapes["true"] == shapes["false"], shapes


@pytest.mark.slow
def test_killed_zygote_the_next_reload_works_and_it_is_restarted(
    gateway_factory, echo_backends
) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    first = _wait_zygote_ready(gw)["pid"]
    os.kill(first, signal.SIGKILL)
    out = gw.ctl("reload")  # at once: the reload starts a new zygote and forks from it
    assert out.returncode == 0, out.stderr + gw.logs()
    assert echo_once(port, b"after") == b"after"
    z = _wait_zygote_ready(gw)
    assert z["pid"] != first and z["restarts"] == 1, z
    exited = gw.events("zygote_exited")
    assert exited and exited[0]["pid"] == first and exited[0]["how"] == "signal SIGKILL"
    # A zygote that does not answer: the replacement worker is a fresh interpreter.
    fallback_pid = z["pid"]
    os.kill(fallback_pid, signal.SIGSTOP)
    try:
        out = gw.ctl("drain", "0")
        assert out.returncode == 0, out.stderr + gw.logs()
    finally:
        with contextlib.suppress(ProcessLookupError):  # discarded: SIGKILLed already
            os.kill(z["pid"], signal.SIGCONT)
    fallback = gw.events("worker_spawn_fallback")
    assert fallback and "no answer" in fallback[0]["reason"], fallback
    readies = gw.events("worker_started")
    assert readies[-1]["started_by"] == "exec"
    assert echo_once(port, b"fresh") == b"fresh"
    z = _zygote(gw)  # discarded (it is restarted after the backoff, as above)
    assert z["fallbacks"] == 1 and z["restarts"] == 2, z
    assert gw.events("zygote_discarded")[-1]["pid"] == fallback_pid


def test_zygote_whose_code_changed_on_disk_is_replaced_at_reload(
    gateway_factory, echo_backends
) -> None:
    port = free_port()
    gw = gateway_factory.start(tcp_config(port, echo_backends))
    first = _wait_zygote_ready(gw)["pid"]
    assert gw.ctl("reload").returncode == 0  # unchanged code: the same zygote
    assert _zygote(gw)["pid"] == first and not gw.events("zygote_stale")
    module = Path(workers.proc_title.__file__)
    st = module.stat()
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # an upgrade
    try:
        out = gw.ctl("reload")
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert out.returncode == 0, out.stderr
    stale = gw.events("zygote_stale")
    assert len(stale) == 1 and stale[0]["pid"] == first, stale
    assert stale[0]["changed"] == str(module)
    second = _zygote(gw)
    assert second["pid"] != first and second["state"] == "ready", second
    # The new generation was forked from the new zygote, after it was ready.
    log = gw.logs()
    assert log.index(f'"pid":{second["pid"]},"modules"') < log.rindex('"started_by":"zygote"')
    assert echo_once(port, b"upgraded") == b"upgraded"
