# dbopt: the two commands of the quickstart are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up down status test unit demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/python -m streams.devenv up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m streams.devenv down; fi

status: $(STAMP)
	$(BIN)/python -m streams.devenv status

# the whole suite: the suite's own fixtures start Kafka and PostgreSQL (make up) when needed
test: up
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

# only the tests that need no server
unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not infra" $(PYTEST_ARGS)

demo: up
	$(BIN)/dbopt demo

bench: up
	$(BIN)/python bench/sdk_cost.py --iterations 20000
	$(BIN)/python bench/worker_throughput.py --events 1000000
	$(BIN)/python bench/otlp_throughput.py

clean: down
	rm -rf .run $(VENV)
