# dbopt: the two commands of the quickstart are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up down status lint test faults unit demo bench clean lock tools browser bench-peers

# the locked versions (requirements/dev.lock: engine + dev, hashes checked), then dbopt-streams itself, editable
$(STAMP): pyproject.toml requirements/dev.lock requirements/build.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements/build.lock -r requirements/dev.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# refresh requirements/*.lock from pyproject.toml's ranges (newest versions that fit; commit the result).
# engine.lock is what the image installs; dev.lock adds the test tools at the same versions.
LOCK := $(BIN)/uv pip compile -q --universal --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
lock: $(STAMP)
	$(LOCK) --upgrade pyproject.toml --extra engine -o requirements/engine.lock
	$(LOCK) --upgrade pyproject.toml --extra dev -c requirements/engine.lock -o requirements/dev.lock
	$(LOCK) --upgrade requirements/build.in -o requirements/build.lock

# pinned kustomize, kubeconform, kube-score (go install) and the CRD schemas the manifest test validates
# against, in .run/tools (cached: rebuilt when k8s/tools changes); see docs/deploy.md
TOOLS := .run/tools
$(TOOLS)/.complete: $(STAMP) k8s/tools/fetch.py k8s/tools/strimzi-crds.xml
	$(BIN)/python k8s/tools/fetch.py $(TOOLS)

tools: $(TOOLS)/.complete

# Debian's Chromium for the browser tests of dbopt serve (tests/test_serve_browser.py, Playwright with
# executable_path=/usr/bin/chromium; Playwright's own browser download is not used)
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium with apt-get ..."; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

install: $(STAMP)

# Kafka (with its SASL_SSL listener: .run/env-secure) and PostgreSQL
up: $(STAMP)
	$(BIN)/python -m streams.devenv up --secure

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m streams.devenv down; fi

status: $(STAMP)
	$(BIN)/python -m streams.devenv status

# linter and type checker, configured in pyproject.toml ([tool.ruff], [tool.mypy])
lint: $(STAMP)
	$(BIN)/ruff check streams tests bench
	$(BIN)/mypy

# the whole suite, after the lint: the suite's own fixtures start Kafka and PostgreSQL (make up) when needed
test: lint up tools browser
	$(BIN)/python -m pytest -q -ra -m "not faults" $(PYTEST_ARGS)

# the fault suite (docs/reliability.md): kills, a broker restart and a PostgreSQL outage on private
# servers of its own (never the shared ones), fuzzed input, late data; bounded, about 10 minutes
faults: up
	$(BIN)/python -m pytest -q -ra -m faults $(PYTEST_ARGS)

# only the tests that need no server
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not infra" $(PYTEST_ARGS)

demo: up
	$(BIN)/dbopt demo

# the peers dbopt is compared with (Quix Streams), in a virtualenv of their own: never a dbopt dependency
PEERS := .run/bench-peers
$(PEERS)/.installed: bench/requirements-peers.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q -r bench/requirements-peers.txt
	touch $@

bench-peers: $(PEERS)/.installed

bench: up bench-peers
	$(BIN)/python bench/sdk_cost.py --iterations 20000
	$(BIN)/python bench/compare.py --events 1000000
	$(BIN)/python bench/sketch_throughput.py
	$(BIN)/python bench/worker_memory.py --keys 100000
	$(BIN)/python bench/close_latency.py
	$(BIN)/python bench/otlp_throughput.py

clean: down
	rm -rf .run $(VENV)
