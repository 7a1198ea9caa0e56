# One command per check; each goes through dev.py, which builds .venv from pyproject.toml when needed.
PY ?= python3

.PHONY: demo test lint typecheck bench check-all

demo:
	$(PY) dev.py demo

test:
	$(PY) dev.py test

lint:
	$(PY) dev.py lint
	$(PY) dev.py format-check
	$(PY) dev.py typecheck

bench:
	$(PY) dev.py bench

check-all: lint test
