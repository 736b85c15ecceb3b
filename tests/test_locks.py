"""The lock files in requirements/, written by `make lock`, agree with the pyproject.toml files.

runtime.txt, what the image installs, is exactly what the server's runtime dependencies
install, nothing of its extras; build.txt is exactly what its build backend needs; dev.txt,
what `make install` installs, pins everything that pyproject.toml and
clients/python/pyproject.toml list. Every pin carries hashes, a package pinned in two files
has one version, and this venv runs the versions of dev.txt. What a requirement installs is
read from the metadata of the installed distributions, with the markers of this machine
(Python 3.11 on Linux, as the locks are compiled for).
"""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
SERVER = tomllib.loads((ROOT / "pyproject.toml").read_text())
CLIENT = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?$")


@dataclass
class Pin:
    version: str
    hashes: int = 0


def read_lock(name: str) -> dict[str, Pin]:
    """The pins of one lock file, by canonical name; any other line fails."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in (LOCKS / name).read_text().splitlines():
        if match := PIN.match(line):
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
        elif HASH.match(line) and current is not None:
            current.hashes += 1
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"{name}: neither a pin nor its hash: {line!r}")
    return pins


def requirements(texts: Iterable[str]) -> list[Requirement]:
    return [Requirement(text) for text in texts]


def closure(roots: Iterable[Requirement]) -> set[str]:
    """Every distribution that these requirements install here, extras followed."""
    names: set[str] = set()
    todo: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def need(requirement: Requirement, extra: str) -> None:
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            return
        name = canonicalize_name(requirement.name)
        todo.append((name, ""))
        todo.extend((name, canonicalize_name(e)) for e in requirement.extras)

    for root in roots:
        need(root, "")
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        names.add(item[0])
        for text in importlib.metadata.requires(item[0]) or ():
            need(Requirement(text), item[1])
    return names


def assert_pinned(pins: dict[str, Pin], listed: Iterable[Requirement], lock: str) -> None:
    for requirement in listed:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{lock} does not pin {requirement}"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{lock} pins {requirement.name}=={pin.version}, outside {requirement}"
        )


def assert_exactly(pins: dict[str, Pin], needed: set[str], lock: str) -> None:
    missing, extra = sorted(needed - set(pins)), sorted(set(pins) - needed)
    assert not missing and not extra, f"{lock}: missing {missing}, not needed {extra}"


RUNTIME = requirements(SERVER["project"]["dependencies"])
EXTRAS = requirements(t for ts in SERVER["project"]["optional-dependencies"].values() for t in ts)
BUILD = requirements(SERVER["build-system"]["requires"])
CLIENT_LISTED = requirements(CLIENT["project"]["dependencies"] + CLIENT["build-system"]["requires"])


@pytest.mark.parametrize("lock", ["runtime.txt", "build.txt", "dev.txt"])
def test_every_pin_of_a_lock_carries_its_hashes(lock: str) -> None:
    pins = read_lock(lock)
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashes] == []


def test_the_runtime_lock_is_exactly_what_the_servers_runtime_dependencies_install() -> None:
    pins = read_lock("runtime.txt")
    assert_pinned(pins, RUNTIME, "runtime.txt")
    assert_exactly(pins, closure(RUNTIME), "runtime.txt")
    # Named for the failure that matters most: a tool of the extras in the image.
    only_extras = {canonicalize_name(r.name) for r in EXTRAS} - closure(RUNTIME)
    assert only_extras.isdisjoint(pins), only_extras & set(pins)


def test_the_build_lock_is_exactly_what_the_build_backend_needs() -> None:
    pins = read_lock("build.txt")
    assert_pinned(pins, BUILD, "build.txt")
    assert_exactly(pins, closure(BUILD), "build.txt")


def test_the_dev_lock_pins_everything_both_pyproject_files_list() -> None:
    pins = read_lock("dev.txt")
    listed = RUNTIME + EXTRAS + BUILD + CLIENT_LISTED
    assert_pinned(pins, listed, "dev.txt")
    missing = closure(listed) - set(pins)
    assert not missing, f"dev.txt does not pin {sorted(missing)}"


@pytest.mark.parametrize("lock", ["runtime.txt", "build.txt"])
def test_a_package_in_two_locks_has_one_version(lock: str) -> None:
    dev = read_lock("dev.txt")
    differ = {
        name: (pin.version, dev[name].version if name in dev else None)
        for name, pin in read_lock(lock).items()
        if name not in dev or dev[name].version != pin.version
    }
    assert differ == {}, f"{lock} against dev.txt"


def test_this_venv_runs_the_versions_of_the_dev_lock() -> None:
    differ = {}
    for name, pin in read_lock("dev.txt").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            differ[name] = (pin.version, installed)
    assert differ == {}, "locked, installed (run `make install`)"


def test_the_server_imports_and_runs_its_demo_with_nothing_but_the_runtime_lock(
    tmp_path: Path,
) -> None:
    """What the image has: every module installed here for the extras, the client or the
    tools is blocked; each module of restock_service imports, and the demo runs."""
    allowed = closure(RUNTIME) | {"restock-service"}
    blocked = sorted(
        {"restock_client"}  # editable, so packages_distributions() does not see it
        | {
            module
            for module, dists in importlib.metadata.packages_distributions().items()
            if not {canonicalize_name(d) for d in dists} & allowed
        }
    )
    assert {"httpx", "pytest", "restock_client"} <= set(blocked)
    code = f"""
import importlib, pkgutil, sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing it raises ImportError
import restock_service
for module in pkgutil.walk_packages(restock_service.__path__, "restock_service."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
from restock_service.cli import main
sys.exit(main(["demo", "--database", "sqlite:///{tmp_path / "demo.db"}"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "As expected: " in done.stdout
