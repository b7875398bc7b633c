# VoidVM: `make run` starts the server, `make test` runs every test. Both install what is missing.
.PHONY: run test lint typecheck pytest sdk-ts bench setup clean

PY := .venv/bin/python

setup:
	@scripts/setup.sh

run: setup
	$(PY) -m voidvm_server.cli serve

lint: setup
	.venv/bin/ruff check src tests bench sdk/python
	.venv/bin/ruff format --check src tests bench sdk/python

typecheck: setup
	.venv/bin/mypy src
	.venv/bin/mypy sdk/python/src sdk/python/tests/typecheck_usage.py

pytest:
	CI=$${CI:-} $(PY) -m pytest -q -p no:cacheprovider tests sdk/python/tests

sdk-ts:
	cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error && npm run build && npm run typecheck && npm test

test:
	@scripts/setup.sh --test
	@scripts/services.sh
	$(MAKE) --no-print-directory lint typecheck sdk-ts pytest

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf .venv .mypy_cache .ruff_cache data
