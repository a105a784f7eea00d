"""`python -m tools.build_native`: compile the hot-path modules with mypyc, in place.

The modules listed by ``native_modules()`` are ordinary typed Python that run once or more per
proxied request: the HTTP header rules, the balancer policies, the health selection, the
worker's metric counters, and the HTTP/1.1 proxy's connection/exchange/reader/pool modules.
mypyc turns each into a C extension that sits next to its ``.py``
(``gateway/http/admission.cpython-311-x86_64-linux-gnu.so``, plus the shared
``gateway/native__mypyc.*.so``); Python imports the extension first, the source stays the
definition and the fallback (delete the ``.so`` files, or never build them, and the same code
runs interpreted). mypyc also checks declared types at run time, so a wrong type that
interpreted Python would carry along raises TypeError here: the test suite runs compiled.
Measured with ``python -m tools.bench http1`` (A/B in one session): the gateway/ modules
about a sixth less CPU per proxied request, the workers/http1 ones another fifth.

Left interpreted on purpose: exception modules (mypyc-compiled exception classes lose their
class-level ``status``/``kind`` defaults), classes inheriting from builtins other than
``object`` (``balancer/errors.py``, ``health/active.py``), msgspec Structs,
modules with ``continue`` inside ``try/finally`` (unsupported: ``http1/websocket.py``),
modules that open nurseries (``http1/serve.py``, ``http1/streaming_request.py``: see below),
``http1/dispatch.py`` (a ``types.coroutine`` trap and a trampoline that awaits in handlers),
and the rest of ``workers/`` and ``supervisor/`` (not per request).

A compiled coroutine must never await inside an ``except`` or ``finally`` block, nor use
``async with``: it does not swap the thread's exception state when it yields as an interpreted
one does, so the exception being handled leaks to whichever task runs next (seen: a lapse's
Cancelled in one connection re-raised by another's handler). Compiled code holds the
exception, does its awaiting outside the handler, then re-raises;
``tests/test_native_build.py`` checks every listed module for the pattern.

Owns: the module list, the build (into ``build/native``), a stamp of the sources' hash so an
unchanged tree is not rebuilt, and ``--check`` (exit 1 when an extension is older than its
source: a stale extension would silently shadow an edit). Must never run on the data path.
Needs a C compiler and the Python headers (the Makefile's apt step installs gcc and
python3-dev).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "native"
STAMP = BUILD_DIR / "sources.sha256"

# The shared runtime module, gateway/native__mypyc.*.so: inside a package, so it imports
# wherever ``gateway`` does (a top-level module would need the repository on sys.path).
GROUP_NAME = "gateway.native"
_SHARED_GLOB = "gateway/native__mypyc*.so"
_PACKAGES = ("gateway/http", "gateway/balancer", "gateway/health")
_MANAGED_ROOTS = ("gateway", "workers")  # where extensions of listed modules may appear
_SINGLE = (
    "gateway/metrics/worker.py",
    "gateway/metrics/families.py",
    "workers/http1/message_reader.py",
    "workers/http1/exchange.py",
    "workers/http1/exchange_steps.py",
    "workers/http1/deadline_watch.py",
    "workers/http1/buffered_request.py",
    "workers/http1/socket_io.py",
    "workers/http1/pool.py",
    "workers/http1/connection.py",
    "workers/http1/upstream.py",
    "workers/http1/context.py",
    "workers/upstreams.py",
    "workers/readiness.py",
    "workers/stats.py",
    "workers/http1_listener.py",
    "workers/access_format.py",
    "workers/access_buffer.py",
)
_EXCLUDED = frozenset(
    (
        "gateway/http/errors.py",
        "gateway/balancer/errors.py",
        "gateway/health/active.py",
    )
)


def native_modules() -> list[str]:
    """Source paths (relative to the repository root) compiled by mypyc."""
    paths = [
        str(p.relative_to(ROOT))
        for package in _PACKAGES
        for p in sorted((ROOT / package).glob("*.py"))
        if p.name != "__init__.py"
    ]
    paths += _SINGLE
    return [p for p in paths if p not in _EXCLUDED]


def _extension_paths(source: str) -> list[Path]:
    src = ROOT / source
    return [src.with_suffix(suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]


def built_extensions() -> list[Path]:
    return [ext for source in native_modules() for ext in _extension_paths(source) if ext.exists()]


def orphan_extensions() -> list[Path]:
    """Extensions beside a source that is no longer compiled (left by an older module list):
    they would import a module the shared runtime no longer has."""
    listed = {ext for source in native_modules() for ext in _extension_paths(source)}
    shared = set(ROOT.glob(_SHARED_GLOB))
    found = {
        ext
        for top in _MANAGED_ROOTS
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        for ext in (ROOT / top).rglob("*" + suffix)
    }
    return sorted(
        ext
        for ext in found
        if ext not in listed and ext not in shared and ext.with_name(_source_name(ext)).exists()
    )


def _source_name(ext: Path) -> str:
    return ext.name.split(".", 1)[0] + ".py"


def stale_extensions() -> list[str]:
    """Compiled modules whose source changed after the build (they would shadow the edit),
    and extensions of modules no longer compiled."""
    stale = [str(ext.relative_to(ROOT)) for ext in orphan_extensions()]
    # Compiled modules call each other through the shared runtime, which holds every
    # module's native code: a source newer than it is stale even if its own extension is gone.
    shared = [p.stat().st_mtime for p in ROOT.glob(_SHARED_GLOB)]
    built_at = min(shared) if shared else None
    for source in native_modules():
        src_mtime = (ROOT / source).stat().st_mtime
        exts = [e for e in _extension_paths(source) if e.exists()]
        if any(e.stat().st_mtime < src_mtime for e in exts) or (
            built_at is not None and built_at < src_mtime
        ):
            stale.append(source)
    return stale


def _sources_digest(modules: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(sys.version.encode())
    for source in modules:
        digest.update(source.encode())
        digest.update((ROOT / source).read_bytes())
    return digest.hexdigest()


def remove_extensions() -> int:
    removed = 0
    for ext in [*built_extensions(), *orphan_extensions()]:
        ext.unlink()
        removed += 1
    for shared in ROOT.glob(_SHARED_GLOB):
        shared.unlink()
        removed += 1
    return removed


def build() -> None:
    modules = native_modules()
    digest = _sources_digest(modules)
    complete = any(ROOT.glob(_SHARED_GLOB)) and all(
        any(e.exists() for e in _extension_paths(m)) for m in modules
    )
    if complete and STAMP.exists() and STAMP.read_text() == digest and not stale_extensions():
        print(f"native: {len(modules)} modules up to date")
        return
    remove_extensions()
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    # mypyc drives setuptools' build_ext; run from the root so module names are right, and
    # keep setuptools from reading this project's pyproject (build_ext needs none of it).
    from mypyc.build import mypycify
    from setuptools import Distribution

    os.chdir(ROOT)
    ext_modules = mypycify(
        modules, opt_level="3", target_dir=str(BUILD_DIR / "c"), group_name=GROUP_NAME
    )
    dist = Distribution({"name": "expressgateway-native", "ext_modules": ext_modules})
    dist.script_name = "tools/build_native.py"
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True  # type: ignore[attr-defined]
    cmd.build_temp = str(BUILD_DIR / "temp")  # type: ignore[attr-defined]
    cmd.ensure_finalized()
    cmd.run()
    # build_ext copies unchanged objects with their old times: stamp every extension now, so
    # "older than its source" keeps meaning "built before the edit".
    for ext in [*built_extensions(), *ROOT.glob(_SHARED_GLOB)]:
        os.utime(ext)
    STAMP.write_text(digest)
    print(f"native: compiled {len(modules)} modules with mypyc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build_native", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="exit 1 if an extension is stale")
    group.add_argument("--clean", action="store_true", help="remove the compiled extensions")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_extensions()
        for source in stale:
            print(
                f"native: {source} is stale (edited after compiling, or no longer listed);"
                " run `make native` (or --clean)"
            )
        return 1 if stale else 0
    if args.clean:
        print(f"native: removed {remove_extensions()} files")
        return 0
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
