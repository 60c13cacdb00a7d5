# renewbot: every target creates .venv and installs first, so a fresh checkout needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_TOOLS := tests/node/node_modules/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test bench lint install image-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e . --group dev
	touch $(STAMP)

# Microsoft's local Teams client and the Teams manifest schemas, for the tests (no install scripts).
$(NODE_TOOLS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(NODE_TOOLS)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/renewbot demo $(DEMO_ARGS)

test: $(STAMP) $(NODE_TOOLS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Slack path under wrk first (needs Debian's wrk and PostgreSQL 15; bench/README.md), then the
# rest. Each prints its goals table with min / median / max and writes it to bench/results/.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 2; }
	$(BIN)/python -m bench.wrk --profile
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check core adapters bot tests
	$(BIN)/mypy

# Build the container image, run compose (PostgreSQL, two replicas, the sandbox) and drive a
# renewal through it, killing one replica on the way. Root and docker needed; not part of `test`.
image-check: $(STAMP)
	PY=$(BIN)/python deploy/image-check.sh
