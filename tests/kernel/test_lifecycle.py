"""Object and datapath lifecycle: build, ABI, errors with verifier logs, pinned adoption."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import kpackets as kp
import pytest

from gateway import steering
from kernel import build
from kernel.datapath import Datapath
from kernel.libbpf import BpfError
from kernel.maps import ABI_CONSTANTS, MapShapeError, MapView, abi
from kernel.objects import BpfObject
from kernel.probe import probe
from kernel.testrun import run_xdp

BAD_PROGRAM = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int bad(struct xdp_md *ctx) {
    return *(int *)(long)ctx->data;  /* no bounds check: the verifier must refuse */
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_steering_limits_match_abi() -> None:
    for name in (
        "MAX_CPUS",
        "MAX_SLOTS",
        "MAX_GROUPS",
        "GROUP_SLOTS",
        "CID_MAX_BYTES",
        "CID_MARKER",
    ):
        assert getattr(steering, name) == ABI_CONSTANTS[f"GW_{name}"], name
    assert ABI_CONSTANTS["GW_NO_KEY"] == steering.NO_KEY
    assert ABI_CONSTANTS["GW_GROUP_QUIC"] == steering.GROUP_QUIC


@pytest.mark.parametrize(
    "struct",
    [
        "gw_xdp_config",
        "gw_cpumap_value",
        "gw_port_key",
        "gw_lpm_v4",
        "gw_lpm_v6",
        "gw_rate_key",
        "gw_rate_state",
        "gw_trace",
        "gw_rp_group_key",
        "gw_rp_group",
    ],
)
def test_abi_structs_have_no_holes(struct: str) -> None:
    fields = abi.typeof(f"struct {struct}").fields
    end = 0
    for _, f in fields:
        assert f.offset == end, (struct, f)
        end = f.offset + abi.sizeof(f.type)
    assert abi.sizeof(f"struct {struct}") == end


def test_map_view_checks_shape() -> None:
    view = MapView("m", -1, "__u32", "struct gw_trace")
    assert view.check_shape(4, 16) is view
    with pytest.raises(MapShapeError, match="gw_trace"):
        view.check_shape(4, 12)


def test_build_skips_fresh_objects_and_reports_clang_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    shutil.copytree(build.BPF_DIR, src)
    monkeypatch.setattr(build, "BPF_DIR", src)
    out = tmp_path / "out"
    assert sorted(p.name for p in build.build(out)) == ["reuseport_select.bpf.o", "xdp_steer.bpf.o"]
    assert build.build(out) == []
    later = (out / "xdp_steer.bpf.o").stat().st_mtime + 5
    os.utime(src / "abi.h", (later, later))
    assert len(build.build(out)) == 2  # a header newer than the objects rebuilds them
    (src / "broken.bpf.c").write_text("int x = ;\n")
    assert build.main(["--out", str(out)]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.root
def test_verifier_rejection_is_a_typed_error_with_the_log(tmp_path: Path) -> None:
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROGRAM)
    obj = tmp_path / "bad.bpf.o"
    subprocess.run(build.clang_command(src, obj), check=True, capture_output=True)
    with BpfObject(obj) as bad, pytest.raises(BpfError) as info:
        bad.load()
    assert info.value.errno == errno.EACCES
    assert any("invalid access to packet" in line for line in info.value.log)


@pytest.mark.root
def test_open_missing_object_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(BpfError) as info:
        BpfObject(tmp_path / "missing.bpf.o")
    assert info.value.errno == errno.ENOENT


@pytest.mark.root
def test_probe_reports_this_machine(obj_dir: Path) -> None:
    features = probe(("lo",), obj_dir)
    assert features.libbpf_version is not None and features.libbpf_version >= (1, 0)
    assert features.bpf_permitted and features.cpumap and features.sk_reuseport
    assert features.bpffs and features.objects and features.xdp_steering
    assert features.incoming_cpu_hint
    assert features.native_xdp == {"lo": False}  # loopback has no driver-mode XDP
    assert features.xdp_mode("lo") == "generic"
    assert "native_xdp:lo" in features.fallbacks
    missing = probe((), obj_dir / "nowhere")
    assert not missing.objects and not missing.xdp_steering and "objects" in missing.fallbacks


@pytest.mark.root
def test_second_generation_adopts_pinned_maps(obj_dir: Path, pin_root: Path) -> None:
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    first = Datapath.open("adopt", obj_dir, pin_root=pin_root, hash_seed=99, trace=True)
    second = None
    try:
        assert first.created
        first.set_workers({0: {}, 1: {}})
        first.deny_add("10.66.0.0/16")
        first.set_rate_cap(50)
        frame = kp.v4_frame("10.1.1.1", "10.1.1.2", 6, kp.tcp(1, 2))
        assert run_xdp(first.xdp_prog_fd, frame).verdict == "REDIRECT"
        second = Datapath.open("adopt", obj_dir, pin_root=pin_root, hash_seed=1)
        assert not second.created
        assert second.config() == {
            "nslots": 256,
            "hash_seed": 99,
            "quic_short_dcid_len": 0,
            "new_flows_per_s": 50,
            "new_flow_v6_prefix": 64,
        }
        assert second.plan.cpu_slots == first.plan.cpu_slots
        assert run_xdp(second.xdp_prog_fd, frame).verdict == "REDIRECT"
        assert sum(second.stats()["redirect_tcp"]) == 2  # counters carry on
        denied = kp.v4_frame("10.66.1.1", "10.1.1.2", 6, kp.tcp(1, 2))
        assert run_xdp(second.xdp_prog_fd, denied).verdict == "DROP"
        # the adopted plan reconciles: dropping CPU 1 rewrites the slot table
        second.set_workers({0: {}})
        assert set(second.plan.cpu_slots) == {0}
        assert first.maps["gw_cpu_map"].lookup(1) is None
    finally:
        os.sched_setaffinity(0, affinity)
        first.close()
        if second is not None:
            second.close(unload=True)
    assert not (pin_root / "adopt").exists()
