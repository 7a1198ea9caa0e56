"""The worker image's Dockerfile, read as Docker reads it (no engine here to build it): what it must hold."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = re.compile(r"PASSWORD|USERNAME|SECRET|TOKEN|API_KEY|DATABASE_URL|CREDENTIAL", re.IGNORECASE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())


def _of(keyword: str) -> list[str]:
    return [arguments for name, arguments in DOCKERFILE if name == keyword]


def _index(predicate) -> int:
    return next(n for n, item in enumerate(DOCKERFILE) if predicate(*item))


def _workdir() -> str:
    (workdir,) = _of("WORKDIR")
    return workdir


def _copied() -> dict[str, int]:
    """Destination (relative to WORKDIR) -> the instruction's position, for every COPY source."""
    copied: dict[str, int] = {}
    for n, (name, arguments) in enumerate(DOCKERFILE):
        if name != "COPY":
            continue
        *sources, destination = shlex.split(arguments)
        assert not any(s.startswith("--from") for s in sources), "no multi-stage copies expected"
        for source in sources:
            target = source if destination in ("./", ".") else destination.removeprefix("./").rstrip("/")
            copied[target.rstrip("/")] = n
    return copied


def _packages() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


def test_base_image_is_a_slim_python_the_project_supports() -> None:
    (base,) = _of("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"


def test_installs_the_project_from_pyproject_with_every_package_and_the_deployments() -> None:
    install = _index(lambda name, args: name == "RUN" and re.search(r"\bpip install \.(\s|$)", args))
    copied = _copied()
    needed = ["pyproject.toml", "README.md", *_packages()]  # the README: pyproject's `readme`
    missing = [path for path in needed if path not in copied]
    assert not missing, f"the Dockerfile does not copy {missing} (pyproject.toml's packages.find include)"
    late = [path for path in needed if copied[path] > install]
    assert not late, f"{late} copied after `pip install .`"
    for package in _packages():
        assert (ROOT / package / "__init__.py").is_file(), package
    assert "prefect.yaml" in copied  # the working directory the deployments' pull step changes into
    assert "deploy" in copied


def test_the_working_directory_is_where_the_docker_and_kubernetes_deployments_change_into() -> None:
    import yaml

    for variant in ("prefect.docker.yaml", "prefect.kubernetes.yaml"):
        config = yaml.safe_load((ROOT / "deploy" / variant).read_text())
        (step,) = config["pull"]
        assert step["prefect.deployments.steps.set_working_directory"]["directory"] == _workdir(), variant


def test_runs_as_a_user_of_its_own() -> None:
    users = _of("USER")
    assert users, "no USER: the container would run as root"
    assert users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:")), users[-1]
    last_user = max(n for n, (name, _) in enumerate(DOCKERFILE) if name == "USER")
    runs_after = [args for n, (name, args) in enumerate(DOCKERFILE) if name == "RUN" and n > last_user]
    assert not runs_after, "every RUN as root belongs before the switch to the user"


def test_no_credentials_are_baked_in() -> None:
    for name, arguments in DOCKERFILE:
        if name in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(arguments), f"{name} {arguments}: credentials come at run time"
            assert not re.search(r"://[^/\s]*:[^/\s]*@", arguments), (
                f"{name} {arguments}: a URL with a password"
            )
    for destination in _copied():
        assert not destination.endswith(".env") and destination not in (".", ".emag-sync"), destination
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in (".env", "*.env", ".emag-sync", ".git", ".venv"):
        assert needed in ignored, f".dockerignore does not keep {needed} out of the build context"


def test_default_command_is_what_the_work_pools_run() -> None:
    (command,) = _of("CMD")
    assert command == '["prefect", "flow-run", "execute"]'
    assert not _of("ENTRYPOINT"), "an ENTRYPOINT would wrap the pool's `prefect flow-run execute`"


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = instructions("# c\nFROM x\nRUN a \\\n    # inside\n    && b\nUSER u\n")
    assert parsed == [("FROM", "x"), ("RUN", "a  && b"), ("USER", "u")]
