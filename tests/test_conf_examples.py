"""The shipped configs and the configuration reference stay true to the schema.

- every file in conf/ that users copy (`default.toml`, every `examples/*.toml`, found by
  glob so files added later are covered) passes the real `expressgateway --check`;
- conf/README.md documents every key of every schema table (and no key that does not
  exist), with the schema's default and the reload/restart class `diff.py` implies;
- every key of conf/default.toml exists in the schema and shows the schema default,
  except a short list of deliberate, documented deviations.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import msgspec
import pytest

from gateway.config import features
from gateway.config.diff import _RESTART_ONLY
from gateway.config.schema import BackendProtocol, Config, ListenerProtocol, ProxyProtocol

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
README = CONF / "README.md"
EXPRESSGATEWAY = Path(sys.executable).parent / "expressgateway"
OWN_EXAMPLES = ("tcp_l4", "http_reverse_proxy", "multi_listener", "admin_metrics")

SHIPPED = [CONF / "default.toml", *sorted((CONF / "examples").glob("*.toml"))]

_SUMMARY = re.compile(
    r"^(?P<path>\S+): OK — (?P<listeners>\d+) listener\(s\) \[(?P<protos>[^\]]*)\], "
    r"(?P<backends>\d+) backend\(s\), (?P<workers>\d+) worker\(s\) on CPUs \[(?P<cpus>[\d, ]+)\], "
    r"config (?P<hash>[0-9a-f]{16})$"
)


def _check(path: Path | str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXPRESSGATEWAY), "--check", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---- the shipped files pass --check --------------------------------------------------


def test_own_examples_are_present() -> None:
    """Guards the glob below against running on an empty directory."""
    names = {p.stem for p in SHIPPED}
    assert set(OWN_EXAMPLES) <= names, f"missing examples: {set(OWN_EXAMPLES) - names}"


@pytest.fixture(scope="module")
def example_certs() -> None:
    """conf/examples/tls.toml and h1s-sni.toml name build/certs/ (ignored by git): make them
    as their comments say."""
    certs = ROOT / "build" / "certs"
    if not all((certs / f"{stem}.key").exists() for stem in ("server", "api", "wild")):
        from tools.make_certs import make_certs

        make_certs(certs, extra={"api": ["api.example.com"], "wild": ["*.example.com"]})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(CONF).as_posix() for p in SHIPPED])
def test_shipped_config_passes_check(path: Path, example_certs: None) -> None:
    rel = path.relative_to(ROOT).as_posix()
    result = _check(rel)
    assert result.returncode == 0, f"{rel} fails --check:\n{result.stderr}"
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    m = _SUMMARY.match(lines[0])
    assert m is not None, f"unexpected summary line: {lines[0]!r}"
    doc = tomllib.loads(path.read_text())
    listeners = doc.get("listeners", [])
    assert m["path"] == rel
    assert int(m["listeners"]) == len(listeners)
    assert int(m["backends"]) == sum(len(lst.get("backends", [])) for lst in listeners)
    for lst in listeners:
        assert f"{lst['name']}={lst['protocol']}@" in m["protos"]
    cpus = [int(c) for c in m["cpus"].split(",")]
    assert int(m["workers"]) == len(cpus)
    workers = doc.get("runtime", {}).get("workers", "auto")
    if isinstance(workers, list):
        assert cpus == workers


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(CONF).as_posix() for p in SHIPPED])
def test_shipped_config_starts_with_a_comment(path: Path) -> None:
    first = path.read_text().lstrip("\ufeff").splitlines()[0]
    assert first.startswith("# "), f"{path.name} must open with a comment saying what it shows"


def _readme_block(marker: str) -> str:
    """The fenced block that follows `<!-- check-example: MARKER -->` in conf/README.md."""
    text = README.read_text()
    at = text.index(f"<!-- check-example: {marker} -->")
    opening = text.index("```", at)
    body_from = text.index("\n", opening) + 1
    return text[body_from : text.index("```", body_from)]


def test_check_error_example_in_readme_is_real(tmp_path: Path) -> None:
    """conf/README.md §1 shows a bad file and its --check output: run it and compare."""
    (tmp_path / "bad.toml").write_text(_readme_block("input"))
    result = _check("bad.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == _readme_block("output")
    lines = result.stderr.splitlines()
    assert lines[0] == f"bad.toml: invalid configuration ({len(lines) - 1} problem(s)):"
    for line in lines[1:]:
        assert re.match(r"^[A-Za-z_<>\[\]0-9.]+: \S", line), line


def test_features_table_in_readme_matches_features_py() -> None:
    """conf/README.md §3 is the one place that says what is built; keep it true."""
    text = README.read_text()
    at = text.index("<!-- features:")
    rows: dict[str, list[str]] = {}
    for line in text[at:].splitlines()[1:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells

    def ticked(cell: str) -> set[str]:
        return set(re.findall(r"`([^`]+)`", cell))

    sets = {
        "Listener protocols": ("BUILT_LISTENER_PROTOCOLS", ListenerProtocol),
        "Backend protocols": ("BUILT_BACKEND_PROTOCOLS", BackendProtocol),
        "PROXY protocol towards backends": ("BUILT_PROXY_PROTOCOLS", ProxyProtocol),
    }
    flags = {
        "TLS termination": "LISTENER_TLS_BUILT",
        "TLS towards backends": "BACKEND_TLS_BUILT",
        "WebSocket over HTTP/1.1 Upgrade": "WEBSOCKET_BUILT",
    }
    for feature, (name, literal) in sets.items():
        built = set(getattr(features, name))
        assert ticked(rows[feature][2]) == built, f"README §3 {feature}: built {built}"
        assert ticked(rows[feature][3]) == set(typing.get_args(literal)) - built, feature
    for feature, name in flags.items():
        assert rows[feature][2] == ("yes" if getattr(features, name) else "no"), feature
    switches = {n for n in vars(features) if n.startswith("BUILT_") or n.endswith("_BUILT")}
    covered = {name for name, _ in sets.values()} | set(flags.values())
    assert switches == covered, f"features.py switches missing from README §3: {switches - covered}"


# ---- the schema, walked ----------------------------------------------------------------


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _struct_of(tp: Any) -> tuple[type[msgspec.Struct] | None, bool]:
    """(struct type, is array of tables) when a field holds a table, else (None, False)."""
    tp = _strip_optional(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp, False
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if isinstance(item, type) and issubclass(item, msgspec.Struct):
            return item, True
    return None, False


def _tables(
    struct: type[msgspec.Struct] = Config, path: str = "", array: bool = False
) -> Iterator[tuple[str, bool, type[msgspec.Struct]]]:
    """Every table of the schema: (dotted path, is array of tables, struct)."""
    if path:
        yield path, array, struct
    for f in msgspec.structs.fields(struct):
        sub, is_array = _struct_of(f.type)
        if sub is not None:
            yield from _tables(sub, f"{path}.{f.name}" if path else f.name, is_array)


def _default(f: msgspec.structs.FieldInfo) -> Any:
    if f.required:
        return msgspec.NODEFAULT
    if f.default_factory is not msgspec.NODEFAULT:
        return f.default_factory()
    return f.default


def _render(value: Any) -> str:
    """A default as conf/README.md writes it."""
    if value is msgspec.NODEFAULT:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    raise AssertionError(f"no README rendering for {value!r}")


# ---- conf/README.md --------------------------------------------------------------------


def _readme_sections() -> dict[str, list[str]]:
    """Heading line -> the lines under it, up to the next heading."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in README.read_text().splitlines():
        if line.startswith("#"):
            current = sections.setdefault(line, [])
        else:
            current.append(line)
    return sections


def _key_rows(path: str, array: bool) -> dict[str, list[str]]:
    marker = f"`[[{path}]]`" if array else f"`[{path}]`"
    matches = [h for h in _readme_sections() if h.startswith("### ") and marker in h]
    assert len(matches) == 1, f"conf/README.md needs exactly one '### {marker}' section"
    rows: dict[str, list[str]] = {}
    for line in _readme_sections()[matches[0]]:
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows[cells[0].strip("`")] = cells
    return rows


TABLES = list(_tables())


def test_schema_walk_finds_every_table() -> None:
    paths = {p for p, _, _ in TABLES}
    assert {"runtime", "listeners", "listeners.backends", "listeners.backends.tls"} <= paths


@pytest.mark.parametrize(("path", "array", "struct"), TABLES, ids=[t[0] for t in TABLES])
def test_readme_documents_every_key(path: str, array: bool, struct: type[msgspec.Struct]) -> None:
    rows = _key_rows(path, array)
    keys = [f.name for f in msgspec.structs.fields(struct)]
    missing = [k for k in keys if k not in rows]
    extra = [k for k in rows if k not in keys]
    assert not missing, f"conf/README.md [{path}] does not document: {missing}"
    assert not extra, f"conf/README.md [{path}] documents keys the schema lacks: {extra}"
    for key, cells in rows.items():
        assert len(cells) == 6, f"[{path}] {key}: expected 6 columns, got {cells}"
        assert all(cells), f"[{path}] {key}: empty cell in {cells}"


@pytest.mark.parametrize(("path", "array", "struct"), TABLES, ids=[t[0] for t in TABLES])
def test_readme_defaults_match_the_schema(
    path: str, array: bool, struct: type[msgspec.Struct]
) -> None:
    rows = _key_rows(path, array)
    for f in msgspec.structs.fields(struct):
        if _struct_of(f.type)[0] is not None:
            continue  # a sub-table: its own section documents its defaults
        shown = re.match(r"`([^`]*)`", rows[f.name][2])
        assert shown is not None, f"[{path}] {f.name}: default cell must start with `value`"
        assert shown.group(1) == _render(_default(f)), (
            f"conf/README.md [{path}] {f.name}: default {shown.group(1)}, "
            f"schema {_render(_default(f))}"
        )


@pytest.mark.parametrize(("path", "array", "struct"), TABLES, ids=[t[0] for t in TABLES])
def test_readme_reload_class_matches_diff(
    path: str, array: bool, struct: type[msgspec.Struct]
) -> None:
    restart_only = {f"{section}.{key}" for section, key in _RESTART_ONLY}
    for key, cells in _key_rows(path, array).items():
        applies = cells[4]
        if f"{path}.{key}" in restart_only:
            assert applies == "restart", f"{path}.{key} is restart-only in diff.py"
        else:
            assert applies in ("reload", "restart (not reported)"), f"{path}.{key}: {applies!r}"


def test_readme_lists_every_restart_only_key_in_its_reload_section() -> None:
    section = next(v for h, v in _readme_sections().items() if h.startswith("## 2."))
    text = "\n".join(section)
    for table, key in _RESTART_ONLY:
        assert f"`{table}.{key}`" in text or f"`{key}`" in text, f"{table}.{key} not in §2"


# ---- conf/default.toml -----------------------------------------------------------------

# Keys whose value in conf/default.toml deliberately differs from the schema default
# (default.toml is a demo that serves something useful; conf/README.md says so).
DEFAULT_TOML_DEVIATIONS = {
    "observability.metrics_bind",  # schema: unset (no admin listener); demo: loopback 9090
    "listeners.health.kind",  # schema: tcp; demo: http against the demo backends
    "listeners.health.path",  # schema: "/"; demo: "/healthz"
}


def _walk_document(
    doc: dict[str, Any], struct: type[msgspec.Struct], path: str, deviations: set[str]
) -> None:
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    for key, value in doc.items():
        where = f"{path}.{key}" if path else key
        assert key in fields, f"conf/default.toml: {where} is not a schema key"
        f = fields[key]
        sub, is_array = _struct_of(f.type)
        if sub is not None:
            for item in value if is_array else [value]:
                _walk_document(item, sub, where, deviations)
            continue
        default = _default(f)
        if default is msgspec.NODEFAULT or value == default:
            continue
        assert where in DEFAULT_TOML_DEVIATIONS, (
            f"conf/default.toml: {where} = {value!r}, but the schema default is {default!r}"
        )
        deviations.add(where)


def test_default_toml_keys_exist_with_schema_defaults() -> None:
    doc = tomllib.loads((CONF / "default.toml").read_text())
    deviations: set[str] = set()
    _walk_document(doc, Config, "", deviations)
    # The allow-list must not rot: every entry is a real, current deviation.
    assert deviations == DEFAULT_TOML_DEVIATIONS
