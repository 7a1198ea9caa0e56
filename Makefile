# One command per check; each goes through dev.py, which builds .venv from pyproject.toml when needed.
PY ?= python3

.PHONY: demo test test-fast lint typecheck bench check-all

demo:
	$(PY) dev.py demo

test:
	$(PY) dev.py test

# Unit tests only (no database, sandbox server or Prefect): under 20 s.
test-fast:
	$(PY) dev.py test-fast

lint:
	$(PY) dev.py lint
	$(PY) dev.py format-check
	$(PY) dev.py typecheck

bench:
	$(PY) dev.py bench

check-all: lint test
