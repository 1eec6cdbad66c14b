# vidq — `make serve` runs the service, `make test` runs every test. Both set up .venv first,
# from the locks in requirements/ (every package pinned): CONTRIBUTING.md says how they are made.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCKS := requirements

.PHONY: install install-server _server-venv serve test test-fast lint bench lock lock-upgrade deps-latest clean

# A venv is built from scratch whenever its lock (or this file) changes, so it never keeps a
# package the lock dropped. The server venv (make serve) is a subset of the dev venv (make
# install / test): same versions, so building the dev venv also satisfies the server's stamp.
install: $(VENV)/.dev
install-server: $(VENV)/.server

# $(call venv,LOCK): a new venv holding exactly LOCK's pins, then vidq itself (editable, built
# with the locked setuptools: no build isolation, so no unpinned download at build time).
define venv
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$$(grep -m1 '^pip==' $(1))"
	$(BIN)/pip install -q -r $(1)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
endef

$(VENV)/.server: $(LOCKS)/server.txt pyproject.toml Makefile
	@if [ -f $(VENV)/.dev ] && [ $(VENV)/.dev -nt $(LOCKS)/server.txt ] && \
	    [ $(VENV)/.dev -nt pyproject.toml ] && [ $(VENV)/.dev -nt Makefile ]; then \
	  echo "$(VENV) holds the dev set, which includes the server's"; \
	else \
	  $(MAKE) --no-print-directory _server-venv; \
	fi
	touch $@

_server-venv:
	$(call venv,$(LOCKS)/server.txt)

$(VENV)/.dev: $(LOCKS)/dev.txt pyproject.toml Makefile
	$(call venv,$(LOCKS)/dev.txt)
	touch $@ $(VENV)/.server

serve: install-server
	$(BIN)/vidq serve

# deploy/: the images' Dockerfiles (hadolint), the Compose file (the Compose JSON schema that
# check-jsonschema ships), the Kubernetes manifests (kubernetes-validate's schemas, strict) and
# KEDA's kinds, which those lack, against deploy/k8s/schemas/keda-<kind>.json. All offline.
K8S := $(wildcard deploy/k8s/*.yaml deploy/k8s/*/*.yaml)
K8S_KEDA := $(foreach f,$(K8S),$(if $(findstring /keda-,$(f)),$(f)))
K8S_CORE := $(filter-out $(K8S_KEDA),$(K8S))

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint deploy/Dockerfile deploy/Dockerfile.gpu
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --strict --quiet $(K8S_CORE)
	$(BIN)/check-jsonschema --check-metaschema deploy/k8s/schemas/*.json
	for f in $(K8S_KEDA); do \
	  $(BIN)/check-jsonschema --schemafile deploy/k8s/schemas/$$(basename $$f .yaml).json $$f \
	    || exit 1; \
	done

# Test files run in 5 processes (-n 5, one file per process at a time: a file's module-scoped
# servers stay in one process): much of their time is spent waiting on servers, PostgreSQL
# and worker processes, so this cuts the wall time even on 2 cores. The files that mostly
# wait, and those that import torch, go down a lane each (tests/support/lanes.py); measured
# on 2 cores with the lanes: -n 4 299 s, -n 5 272 s, -n 6 289 s (more CPU). CONTRIBUTING.md
# ("Tests") says how to run one layer, one file or one marker.
# Python may write bytecode while the tests run, even where the machine says not to
# (PYTHONDONTWRITEBYTECODE): otherwise each of the suite's processes (the pytest workers and
# the vidq processes the tests start) compiles and assert-rewrites the same modules again.
# One OpenMP thread per process (OMP_NUM_THREADS=1): torch's threads spin while they wait
# for each other when 5 test processes share 2 cores (bench/gpu_wan.py --tiny alone: 9.5
# CPU-seconds with torch's 2 threads, 7.4 with 1, in the same wall time).
PYTEST := env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 $(BIN)/pytest
PARALLEL := -n 5 --dist loadfile --no-loadscope-reorder
test: install lint
	$(PYTEST) -q $(PARALLEL)

# For iterating: SQLite only (no PostgreSQL, no S3), without the slow tests, stop at the
# first failure.
test-fast: install
	$(PYTEST) -q -x $(PARALLEL) -m "not slow and not postgres and not s3"

bench: install
	$(BIN)/python bench/api.py
	$(BIN)/python bench/dispatch.py
	$(BIN)/python bench/outbound.py
	$(BIN)/python bench/outputs.py
	$(BIN)/python bench/cli.py

# --- the locks ------------------------------------------------------------------------------
# uv resolves (fast, and it can target another Python and platform than this machine's); it
# lives in a venv of its own, so it is in no lock. dev.txt: server + test + wan on Python 3.11,
# with torch's CPU build (torch==2.13.0+cpu, on disk in /opt/wheels on this project's machines;
# elsewhere pip would find no such build); server.txt and gpu.txt (deploy/Dockerfile.gpu:
# Python 3.12, PyPI's CUDA torch) take dev.txt's versions wherever they share a package.
UV_VERSION := 0.13.9
UV := .venv-lock/bin/uv
COMPILE = $(UV) pip compile --quiet --custom-compile-command "make lock" \
	--python-platform x86_64-manylinux_2_28 pyproject.toml $(LOCKS)/tools.in

$(UV):
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q uv==$(UV_VERSION)

# After a change of pyproject.toml's ranges: keeps every pin that still fits.
lock: $(UV)
	$(COMPILE) $(UPGRADE) --python-version 3.11 --extra server --extra test --extra wan \
	  --find-links /opt/wheels --no-emit-find-links -o $(LOCKS)/dev.txt
	grep -v '^torch==' $(LOCKS)/dev.txt > .venv-lock/dev-versions.txt
	$(COMPILE) --python-version 3.11 --extra server -c .venv-lock/dev-versions.txt \
	  -o $(LOCKS)/server.txt
	$(COMPILE) --python-version 3.12 --extra server --extra wan --extra fp8 \
	  -c .venv-lock/dev-versions.txt -o $(LOCKS)/gpu.txt

# Moves every pin to the newest version the ranges allow (run deps-latest first).
lock-upgrade:
	$(MAKE) lock UPGRADE=--upgrade

# Not part of make test: the newest versions the ranges allow, in a throwaway venv, running the
# fast suite, so drift is found on purpose (then `make lock-upgrade` moves the lock forward).
deps-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/pip install -q -e '.[server,test,wan]'
	.venv-latest/bin/pytest -q -x $(PARALLEL) \
	  -m "not slow and not postgres and not s3 and not lock" -p no:cacheprovider

clean:
	rm -rf $(VENV) .venv-lock .venv-latest var .pytest_cache .mypy_cache .ruff_cache
