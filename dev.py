#!/usr/bin/env python3
"""Bootstrap for a fresh clone: builds .venv from pyproject.toml, then runs the demo, tests, lint or bench.

Needs only Python 3.11+. Re-installs only when pyproject.toml changed since the last install.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".emag-sync-installed"

COMMANDS = {
    "demo": [str(BIN / "emag-sync"), "demo"],
    "test": [str(BIN / "python"), "-m", "pytest"],
    "test-fast": [str(BIN / "python"), "-m", "pytest", "-m", "unit", "-q"],
    "lint": [str(BIN / "ruff"), "check", "."],
    "format-check": [str(BIN / "ruff"), "format", "--check", "."],
    "typecheck": [str(BIN / "mypy")],
    "bench": [str(BIN / "python"), "-m", "benchmarks.bench"],
}


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the user has
        sys.exit(f"emag-sync needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing emag-sync and its dependencies (first run only) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 dev.py {{{','.join(COMMANDS)}}} [extra arguments]", file=sys.stderr)
        return 2
    ensure_environment()
    command = [*COMMANDS[argv[0]], *argv[1:]]
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
