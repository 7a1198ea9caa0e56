"""Prefect flows: orchestration only, each reading top to bottom (preflight, extract, load, check)."""
