# vidq — `make serve` runs the service, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[server,test,wan]'
	touch $(STAMP)

serve: install
	$(BIN)/vidq serve

# deploy/: the images' Dockerfiles (hadolint), the Compose file (the Compose JSON schema that
# check-jsonschema ships), the Kubernetes manifests (kubernetes-validate's schemas, strict) and
# KEDA's kinds, which those lack, against deploy/k8s/schemas/keda-<kind>.json. All offline.
K8S := $(wildcard deploy/k8s/*.yaml deploy/k8s/*/*.yaml)
K8S_KEDA := $(foreach f,$(K8S),$(if $(findstring /keda-,$(f)),$(f)))
K8S_CORE := $(filter-out $(K8S_KEDA),$(K8S))

lint: install
	$(BIN)/ruff check src tests bench
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

# Test files run in 4 processes (-n 4, one file per process at a time): most of their time
# is spent waiting on the servers they start, so this cuts the wall time even on 2 cores.
test: install lint
	$(BIN)/pytest -q -n 4 --dist loadfile

# For iterating: e2e on SQLite only, without the long fault test, stop at the first failure.
test-fast: install
	E2E_BACKENDS=sqlite $(BIN)/pytest -q -x -n 4 --dist loadfile -m "not slow"

bench: install
	$(BIN)/python bench/api.py
	$(BIN)/python bench/dispatch.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
