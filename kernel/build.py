"""Compile every kernel/bpf/*.bpf.c into BPF objects: `python -m kernel.build --out build/bpf`.

Owns: the one clang command line for our BPF programs and the "newer than its sources" rule.
Must never: run at gateway start-up (the supervisor loads prebuilt objects only).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent / "bpf"


def clang_command(source: Path, output: Path) -> list[str]:
    """The clang invocation for one program (see kernel-datapath-notes P1 for the -I)."""
    multiarch = f"/usr/include/{platform.machine()}-linux-gnu"
    return [
        "clang",
        "-O2",
        "-g",
        "-Wall",
        "-target",
        "bpf",
        f"-I{multiarch}",
        f"-I{BPF_DIR}",
        "-c",
        str(source),
        "-o",
        str(output),
    ]


def _stale(source: Path, output: Path, headers: list[Path]) -> bool:
    if not output.exists():
        return True
    built_at = output.stat().st_mtime
    return any(p.stat().st_mtime > built_at for p in [source, *headers])


def build(out_dir: Path, *, force: bool = False) -> list[Path]:
    """Compile stale objects into out_dir; returns the objects compiled this time.

    Raises subprocess.CalledProcessError (with clang's stderr) on a failed compile.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    headers = sorted(BPF_DIR.glob("*.h"))
    built: list[Path] = []
    for source in sorted(BPF_DIR.glob("*.bpf.c")):
        output = out_dir / (source.name[: -len(".c")] + ".o")
        if not force and not _stale(source, output, headers):
            continue
        tmp = output.with_suffix(f".o.tmp{os.getpid()}")
        subprocess.run(clang_command(source, tmp), check=True, capture_output=True, text=True)
        tmp.replace(output)
        built.append(output)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernel.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/bpf"))
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        built = build(args.out, force=args.force)
    except FileNotFoundError as exc:
        print(f"kernel.build: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(exc.stderr, file=sys.stderr, end="")
        print(f"kernel.build: clang failed for {exc.cmd[-3]}", file=sys.stderr)
        return 1
    for path in built:
        print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
