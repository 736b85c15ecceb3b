"""The Dockerfile, checked without Docker (which cannot run here).

It must install what the lock files pin and nothing else (a lock with --require-hashes, a
wheel with --no-deps), copy only files that are in the build context, run the console script
that pyproject.toml declares with the defaults of `restock-service serve`, and run as a user
that is not root. What the lock files hold is tests/test_locks.py's business.
"""

import fnmatch
import importlib.metadata
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from restock_service import cli
from restock_service.config import DEFAULT_DATABASE_URL

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
RUNTIME_LOCK = "requirements/runtime.txt"
BUILD_LOCK = "requirements/build.txt"


@dataclass
class Stage:
    """One FROM … stage: its instructions, and where each file it copied from the context lies."""

    instructions: list[tuple[str, str]] = field(default_factory=list)
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    copied: dict[PurePosixPath, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the stage has no {keyword}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    found, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += " " + line.strip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
            pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages() -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            result.append(Stage())
        assert result, f"{keyword} before the first FROM"
        stage = result[-1]
        stage.instructions.append((keyword, args))
        if keyword == "WORKDIR":
            stage.workdir = stage.workdir / args
        elif keyword == "COPY" and not args.startswith("--from"):
            *sources, dest = shlex.split(args)
            target = stage.workdir / dest
            for source in sources:
                at = target / PurePosixPath(source).name if dest.endswith("/") else target
                stage.copied[at] = source
    return result


def pip_commands(stage: Stage) -> list[list[str]]:
    """Each `pip …` command of the stage's RUN instructions, as its arguments after `pip`."""
    commands = []
    for run in stage.all("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if words[:1] == ["pip"]:
                commands.append(words[1:])
            elif words[:3] == ["python", "-m", "pip"]:
                commands.append(words[3:])
    return commands


def locks_installed(stage: Stage, command: list[str]) -> list[str]:
    """The context's files that a `pip install -r FILE` command names, as copied to FILE."""
    files = [command[i + 1] for i, word in enumerate(command) if word == "-r"]
    return [stage.copied.get(stage.workdir / file, f"(not copied: {file})") for file in files]


def test_the_image_installs_the_runtime_lock_by_hashes_and_then_its_wheel_alone() -> None:
    image = stages()[-1]
    installs = [c for c in pip_commands(image) if c[0] == "install"]
    hashed = [c for c in installs if "--require-hashes" in c]
    assert [locks_installed(image, c) for c in hashed] == [[RUNTIME_LOCK]]
    # Anything else it installs brings no dependency of its own: only the lock's.
    assert all("--no-deps" in c for c in installs if c not in hashed), installs


def test_every_pip_command_takes_a_lock_by_hashes_or_no_dependencies() -> None:
    for stage in stages():
        for command in pip_commands(stage):
            if "--require-hashes" in command:
                assert all(
                    lock.startswith("requirements/") for lock in locks_installed(stage, command)
                ), command
                continue
            assert "--no-deps" in command, f"pip {' '.join(command)}: neither hashes nor --no-deps"
            if "." in command:  # a build from source: the backend of the lock, not a download
                assert "--no-build-isolation" in command, command
                assert any(
                    "--require-hashes" in c and locks_installed(stage, c) == [BUILD_LOCK]
                    for c in pip_commands(stage)
                ), "the stage that builds the wheel installs requirements/build.txt first"


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = {source for stage in stages() for source in stage.copied.values()}
    assert {RUNTIME_LOCK, BUILD_LOCK} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        parts = PurePosixPath(source).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for pattern in ignored:
            hits = [p for p in prefixes if fnmatch.fnmatch(p, pattern.removeprefix("**/"))]
            assert not hits, f"COPY {source}: .dockerignore leaves it out ({pattern})"


def test_the_image_runs_the_console_script_of_pyproject_with_the_defaults_of_serve() -> None:
    image = stages()[-1]
    assert not image.all("ENTRYPOINT")
    command = json.loads(image.last("CMD"))
    assert command[0] in SCRIPTS, f"{command[0]} is not a script of pyproject.toml"
    (script,) = importlib.metadata.entry_points(group="console_scripts", name=command[0])
    assert script.value == SCRIPTS[command[0]]
    assert script.load() is cli.main

    args = vars(cli.arguments().parse_args(command[1:]))
    defaults = vars(cli.arguments().parse_args(["serve"]))
    assert args["command"] == "serve"
    # Only the host differs: in a container it must listen beyond loopback.
    assert {k: v for k, v in args.items() if defaults[k] != v} == {"host": "0.0.0.0"}
    assert image.last("EXPOSE") == str(args["port"])
    assert f"http://127.0.0.1:{args['port']}/health" in image.last("HEALTHCHECK")


def test_the_image_sets_no_setting_and_keeps_the_default_database_on_its_volume() -> None:
    for stage in stages():
        for env in stage.all("ENV"):
            assert "RESTOCK_" not in env, f"ENV {env}: the image would not serve serve's defaults"
    image = stages()[-1]
    assert DEFAULT_DATABASE_URL.startswith("sqlite+aiosqlite:///./")  # relative to WORKDIR
    assert json.loads(image.last("VOLUME")) == [str(image.workdir)]


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    image = stages()[-1]
    user = image.last("USER").split(":")[0]
    assert user not in {"root", "0"}
    assert any(re.search(rf"useradd [^&]* {user}(\s|$)", run) for run in image.all("RUN"))
    order = [keyword for keyword, _ in image.instructions]
    assert order.index("USER") < order.index("CMD")
