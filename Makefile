# Relay — the two commands: `make up` (start the whole stack) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NPM_STAMP := sdk_typescript/node_modules/.installed-stamp

.PHONY: up down status test test-unit test-integration test-e2e gen lint venv sdk-ts bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt server/pyproject.toml sdk_python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e ./sdk_python -e ./server
	touch $(STAMP)

## sdk-ts: install the TypeScript SDK's pinned toolchain (protoc-gen-es, tsc) from package-lock.json
sdk-ts: $(NPM_STAMP)

$(NPM_STAMP): sdk_typescript/package.json sdk_typescript/package-lock.json
	cd sdk_typescript && npm ci --no-audit --no-fund
	touch $(NPM_STAMP)

## gen: regenerate pb2/pyi/grpc stubs and the Envoy descriptor from protos/
gen: $(STAMP) $(NPM_STAMP)
	$(PY) scripts/gen.py

## lint: buf STANDARD lint of protos/ (through a descriptor image: no network)
lint: $(STAMP)
	$(PY) scripts/buf_lint.py

## up: install, start embedded Postgres + Redis, migrate, seed, start workers + Envoy
up: $(STAMP) $(NPM_STAMP)
	$(PY) scripts/gen.py
	$(PY) -m relay_server.stack up

## down: stop what `make up` started
down:
	$(PY) -m relay_server.stack down

status:
	$(PY) -m relay_server.stack status

## test: unit + integration (real Postgres/Redis) + e2e (openai SDK → Envoy → server)
test: $(STAMP) $(NPM_STAMP)
	$(PY) -m pytest

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e

## bench: own stack on free ports, mock upstream; prints one table, writes bench/results/latest.json (bench/README.md)
bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
