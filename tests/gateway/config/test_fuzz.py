"""Hypothesis: arbitrary TOML documents and bytes raise nothing but ConfigError."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.plan import compile_config
from gateway.errors import ConfigError

KEYS = [
    "runtime",
    "listeners",
    "workers",
    "name",
    "address",
    "protocol",
    "backends",
    "weight",
    "balancer",
    "policy",
    "hash_key",
    "health",
    "kernel",
    "deny",
    "drain_timeout_ms",
    "http",
    "observability",
    "metrics_bind",
    "admin",
    "x",
]

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.booleans(),
    st.floats(allow_nan=False),
    st.sampled_from(
        ["tcp", "h1", "udp", "quic", "127.0.0.1:80", "[::1]:80", "auto", "maglev", "0", ""]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)


def to_toml(doc: dict[str, object]) -> str:
    lines = []
    for k, v in doc.items():
        lines.append(f"{k} = {render(v)}")
    return "\n".join(lines)


def render(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if not isinstance(v, float) or (v == v and abs(v) != float("inf")) else "0"
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(render(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {render(x)}" for k, x in v.items()) + "}"
    raise AssertionError(v)


def compile_or_config_error(data: bytes) -> None:
    try:
        compile_config(data, online_cpus=[0, 1])
    except ConfigError as exc:
        assert exc.problems, "a ConfigError always carries at least one problem"
        for p in exc.problems:
            assert p.path and p.message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_structured_documents(doc: dict[str, object]) -> None:
    text = to_toml(doc)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass  # still must be a ConfigError below
    compile_or_config_error(text.encode())


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    compile_or_config_error(data)


@settings(max_examples=200)
@given(st.text(alphabet="[]=\".,:{}\n abc123_-#'", max_size=200))
def test_arbitrary_toml_like_text(text: str) -> None:
    compile_or_config_error(text.encode())


def test_a_key_toml_must_quote_is_named_quoted() -> None:
    # Found by test_arbitrary_toml_like_text: ''=1 used to give a problem with an empty path.
    with pytest.raises(ConfigError) as caught:
        compile_config(b"''=1\n\"a b\"=2\n", online_cpus=[0, 1])
    paths = {p.path for p in caught.value.problems}
    assert '""' in paths and '"a b"' in paths
