"""restock-client installs and works on its own, without any of the server's dependencies.

pip installs ./clients/python into an empty venv, as a caller would (`pip install
./clients/python`), its httpx and tenacity from the package index at the versions of
requirements/dev.txt (from pip's cache after the first run; about 10 s then). In that venv the
client imports without restock_service, pydantic, FastAPI or SQLAlchemy, and restocks an
order against a real `restock-service serve` over HTTP.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from restock_service.messages import MESSAGE, Code
from tests.helpers import rakuten
from tests.servers import Server

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "python"

# The server's own distributions and the runtime dependencies a caller must not get.
SERVERS_DEPENDENCIES = {
    "restock-service",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "sqlalchemy",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "uvicorn",
    "prometheus-client",
    "jinja2",
    "itsdangerous",
}
SERVERS_MODULES = {"restock_service", "pydantic", "fastapi", "starlette", "sqlalchemy", "asyncpg"}

# Runs inside the client's venv: a restock, a read and an adjustment against a real server.
WALK = """
import asyncio, json, sys
import httpx
from restock_client import OrderCancel, RestockClient

async def main(url, order_no):
    async with httpx.AsyncClient(base_url=url) as raw:
        (await raw.put("/stock/A", json={"quantity": 10})).raise_for_status()
        items = [{"sku": "A", "quantity": 3}]
        execution = {"order_no": order_no, "mall": "rakuten", "items": items}
        (await raw.post("/sync-executions", json=execution)).raise_for_status()
    async with RestockClient(url) as client:
        batch = await client.restock("rakuten", [OrderCancel(order_no, True)])
        record = await client.get_restock(order_no)
        level = await client.adjust("A", 1, "棚卸し")
    modules = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({
        "code": batch.results[0].code, "message": batch.results[0].message,
        "status": record.status, "quantity": level.quantity, "modules": modules,
    }))

asyncio.run(main(*sys.argv[1:]))
"""


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a fresh venv holding restock-client and its dependencies only."""
    home = tmp_path_factory.mktemp("client-venv")
    # The lock's versions as constraints: without their hashes, which pip would demand of
    # the client's own directory too.
    pins = re.findall(r"^\S+==\S+", (ROOT / "requirements" / "dev.txt").read_text(), re.M)
    (home / "constraints.txt").write_text("\n".join(pins) + "\n")
    venv = home / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=home)
    python = venv / "bin" / "python"
    # The dev venv's pip installs into the new venv (--python): no pip of its own to set up.
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--disable-pip-version-check", "-c", home / "constraints.txt", CLIENT,
        cwd=home,
    )  # fmt: skip
    yield python


def test_the_client_installs_and_imports_without_the_servers_dependencies(
    client_python: Path, tmp_path: Path
) -> None:
    listed = run(
        client_python,
        "-c",
        "import importlib.metadata as m, json;"
        "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))",
        cwd=tmp_path,
    )
    installed = {name.lower().replace("_", "-") for name in json.loads(listed.stdout)}
    assert {"restock-client", "httpx", "tenacity"} <= installed
    assert installed.isdisjoint(SERVERS_DEPENDENCIES), installed & SERVERS_DEPENDENCIES

    run(
        client_python,
        "-c",
        "import importlib.util, restock_client, sys;"
        "assert 'restock_service' not in sys.modules and 'pydantic' not in sys.modules;"
        "assert importlib.util.find_spec('restock_service') is None;"
        "from restock_client import RestockClient",
        cwd=tmp_path,
    )


def test_the_installed_client_restocks_against_a_real_server(
    client_python: Path, tmp_path: Path
) -> None:
    server = Server(f"sqlite+aiosqlite:///{tmp_path / 'restock.db'}", "--migrate")
    try:
        server.start()
        walked = run(client_python, "-c", WALK, server.url, rakuten(1), cwd=tmp_path)
    finally:
        server.close()
    got = json.loads(walked.stdout)
    assert (got["code"], got["status"]) == ("restored", "restored")
    assert got["message"] == MESSAGE[Code.RESTORED]
    assert got["quantity"] == 11  # 10, less 3 by the sync, 3 back, 1 by the adjustment
    assert SERVERS_MODULES.isdisjoint(got["modules"])
