# Hashgrid: the two commands are `make up` and `make test`; both run `make setup` first.
SHELL := /bin/bash
PY := .venv/bin/python
FORGE := .venv/bin/forge  # the native binary: the npm bin wrapper exits 0 even when tests fail
ARGS ?=
# forge's profile (foundry.toml): `ci` under CI=true (.ci/run sets it), else the quicker default
FOUNDRY_PROFILE ?= $(if $(filter true,$(CI)),ci,default)

.PHONY: help setup up test test-contracts test-python bugs bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: ## install whatever is missing (idempotent; a second run takes seconds)
	@bash scripts/setup.sh

up: setup ## run a local Hashgrid network end to end (options: ARGS="--providers 5 ...")
	@$(PY) -m hashgrid.cli up $(ARGS)

test: ## run every test: ruff + mypy, forge (unit, fuzz, invariant), planted bugs, pytest; then check the tree is unchanged
	@bash scripts/check_tree.sh snapshot
	@$(MAKE) --no-print-directory setup lint test-contracts test-python bugs
	@bash scripts/check_tree.sh compare

test-contracts: ## forge unit, fuzz and invariant tests (CI=true: the `ci` profile, 100,000 calls per invariant)
	@FOUNDRY_PROFILE=$(FOUNDRY_PROFILE) $(FORGE) test

test-python: ## pytest against real anvil, Docker, wasmtime, Redis, PostgreSQL
	@$(PY) -m pytest

bugs: ## prove each invariant can fail: apply each planted bug and expect forge to catch it
	@bash scripts/check_planted_bugs.sh

bench: setup ## run every benchmark: each prints a table; here they also update docs/ (alone, only with --write-docs)
	@$(PY) -m bench.gas --write-docs && $(PY) -m bench.runtime --write-docs && $(PY) -m bench.matching && $(PY) -m bench.api --write-docs && $(PY) -m bench.verification_sim --write-docs

lint: ## ruff and mypy; the web app's TypeScript (tsc --noEmit)
	@.venv/bin/ruff check . && .venv/bin/mypy hashgrid provider marketplace billing verifier scripts bench
	@cd web && node_modules/.bin/tsc --noEmit -p .

clean: ## remove build outputs (keeps .venv and node_modules)
	@rm -rf build/forge build/forge-cache build/solc
