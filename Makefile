# ExpressGateway — the two commands: `make run` and `make test`.
# Both install everything first (apt packages, venv, Python deps, BPF build) and are
# fast to re-run: each step is skipped while its inputs are unchanged.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
APT_PACKAGES := clang llvm libbpf-dev bpftool ethtool iproute2 curl openssl netcat-openbsd nginx libnginx-mod-stream haproxy wrk nghttp2-client systemd python3-venv python3-dev gcc ngtcp2-server ngtcp2-client chromium chromium-driver
CONFIG ?= conf/default.toml
PYTEST_ARGS ?=
# Two test files at a time (pytest-xdist): most tests wait on real peers, not on the CPU.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: run test install apt venv bpf native lint check clean

install: $(STAMPS)/apt $(STAMPS)/venv bpf native

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

$(STAMPS)/venv: pyproject.toml | $(STAMPS)/apt
	@mkdir -p $(STAMPS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@touch $@

bpf: $(STAMPS)/venv
	@$(PY) -m kernel.build --out build/bpf

# The hot pure modules compiled by mypyc next to their sources (tools/build_native.py);
# rebuilt when a listed source changes (it keeps a hash of them).
native: $(STAMPS)/venv
	@mkdir -p build
	@$(PY) -m tools.build_native > build/native.log 2>&1 || { tail -40 build/native.log; exit 1; }
	@grep '^native:' build/native.log
	@$(PY) -m tools.build_native --check

run: install
	@$(PY) -m tools.run_demo --config $(CONFIG)

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: install lint
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not serial" $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: PYTEST_ARGS selected none

check: $(STAMPS)/venv
	@$(PY) -m supervisor.cli --check $(CONFIG)

clean:
	-$(PY) -m tools.build_native --clean
	rm -rf $(STAMPS) build .pytest_cache .mypy_cache .ruff_cache
