"""Keys kept in the database (contract v1.3): made by the CLI and by the platform's calls,
shown once, kept as digests, revoked everywhere within 5 seconds; RESTOCK_API_KEYS beside
them."""

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.cli import main
from restock_service.config import Settings
from restock_service.keys import Keyring
from restock_service.metrics import MULTIPROC_DIR
from restock_service.tables import api_keys, stock_movements
from tests.conftest import TESTS_OWN, database_for, empty_tables, migrated_pg_database
from tests.helpers import Database
from tests.servers import Server
from tests.test_merchants import KEYS, assert_problem, bearer
from tests.test_metrics_workers import served_by_worker

ADMIN = bearer("key-of-admin")
KEY_SHAPE = r"^rsk_[A-Za-z0-9_-]{43}$"  # 256 random bits


@pytest.fixture(autouse=True)
async def _no_key_left(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Leave the session's shared database without keys, as the other tests expect it: a
    key in it would close their deployments."""
    yield
    if "database_url" in request.fixturenames:
        async with database_for(request.getfixturevalue("database_url")) as db:
            await empty_tables(db)


@pytest.fixture
async def platform(database_url: str, db: Database) -> AsyncIterator[AsyncClient]:
    """A deployment with the keys of tests/test_merchants.py, shop-a registered."""
    app: FastAPI = create_app(Settings(database_url=database_url, api_keys=KEYS))
    async with app.router.lifespan_context(app):
        await empty_tables(db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            put = await client.put("/merchants/shop-a", json={"name": "A"}, headers=ADMIN)
            assert put.status_code == 201
            yield client


async def _make(client: AsyncClient, name: str, role: str = "writer", **headers: str) -> str:
    made = await client.post(
        "/merchants/shop-a/keys", json={"name": name, "role": role}, headers={**ADMIN, **headers}
    )
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


async def test_a_key_made_by_the_call_is_shown_once_and_works_for_its_merchant_only(
    platform: AsyncClient, db: Database
) -> None:
    made = await platform.post(
        "/merchants/shop-a/keys", json={"name": "yamada", "role": "writer"}, headers=ADMIN
    )
    assert made.status_code == 201
    body = made.json()
    assert set(body) == {"merchant_id", "name", "role", "key", "created_at"}
    assert (body["merchant_id"], body["name"], body["role"]) == ("shop-a", "yamada", "writer")
    key = body["key"]
    assert re.fullmatch(KEY_SHAPE, key)

    yamada = bearer(key)
    put = await platform.put("/stock/A", json={"quantity": 4}, headers=yamada)
    assert put.status_code == 200
    assert (await platform.get("/stock/A", headers=bearer("key-of-a-reader"))).json()[
        "quantity"
    ] == 4
    assert (await platform.get("/stock/A", headers=bearer("key-of-legacy"))).status_code == 404
    other = await platform.get("/stock/A", headers=bearer(key, **{"Merchant-Id": "default"}))
    assert_problem(other, 403)
    async with db.engine.connect() as conn:
        actors = (await conn.execute(sa.select(stock_movements.c.actor))).scalars().all()
        stored = (await conn.execute(sa.select(api_keys.c.digest))).scalars().all()
    assert actors == ["yamada"]
    assert bytes(stored[0]) == hashlib.sha256(key.encode()).digest()  # only its digest

    listed = await platform.get("/merchants/shop-a/keys", headers=ADMIN)
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert set(item) == {"name", "role", "created_at", "last_used_at"}
    assert item["name"] == "yamada" and item["last_used_at"] is not None
    assert key not in listed.text


async def test_a_name_names_one_key_for_good_and_not_one_of_the_variables(
    platform: AsyncClient,
) -> None:
    await _make(platform, "yamada")
    again = await platform.post(
        "/merchants/shop-a/keys", json={"name": "yamada", "role": "reader"}, headers=ADMIN
    )
    assert_problem(again, 409)
    assert "yamada" in again.json()["detail"]
    revoked = await platform.delete("/merchants/shop-a/keys/yamada", headers=ADMIN)
    assert revoked.status_code == 204
    after = await platform.post(
        "/merchants/shop-a/keys", json={"name": "yamada", "role": "reader"}, headers=ADMIN
    )
    assert_problem(after, 409)  # an actor "yamada" on a ledger row names one key
    # a-writer is shop-a's in RESTOCK_API_KEYS: not made again, not revoked here.
    configured = await platform.post(
        "/merchants/shop-a/keys", json={"name": "a-writer", "role": "writer"}, headers=ADMIN
    )
    assert_problem(configured, 409)
    kept = await platform.delete("/merchants/shop-a/keys/a-writer", headers=ADMIN)
    assert_problem(kept, 409)
    assert "RESTOCK_API_KEYS" in kept.json()["detail"]
    assert (await platform.get("/stock/A", headers=bearer("key-of-a-writer"))).status_code == 404


async def test_a_revoked_key_is_refused_at_once_in_the_process_that_revoked_it(
    platform: AsyncClient,
) -> None:
    key = await _make(platform, "sato")
    assert (await platform.get("/stock/A", headers=bearer(key))).status_code == 404
    revoked = await platform.delete("/merchants/shop-a/keys/sato", headers=ADMIN)
    assert revoked.status_code == 204
    assert_problem(await platform.get("/stock/A", headers=bearer(key)), 401)
    assert_problem(await platform.delete("/merchants/shop-a/keys/sato", headers=ADMIN), 404)
    listed = await platform.get("/merchants/shop-a/keys", headers=ADMIN)
    assert listed.json() == {"items": []}


async def test_the_calls_answer_bad_input_by_field_and_other_keys_with_403(
    platform: AsyncClient,
) -> None:
    cases = [
        ({"name": "platform:x", "role": "writer"}, "name"),
        ({"name": " x", "role": "writer"}, "name"),
        ({"name": "x" * 65, "role": "writer"}, "name"),
        ({"name": "x", "role": "admin"}, "role"),
        ({"name": "x"}, "role"),
    ]
    for body, field in cases:
        response = await platform.post("/merchants/shop-a/keys", json=body, headers=ADMIN)
        assert_problem(response, 422, field)
    assert_problem(
        await platform.post(
            "/merchants/shop-z/keys", json={"name": "x", "role": "writer"}, headers=ADMIN
        ),
        404,
    )
    assert_problem(await platform.get("/merchants/shop-z/keys", headers=ADMIN), 404)
    assert_problem(await platform.delete("/merchants/shop-z/keys/x", headers=ADMIN), 404)
    for key in ("key-of-ops", "key-of-a-writer", "key-of-legacy"):
        refused = await platform.post(
            "/merchants/shop-a/keys", json={"name": "x", "role": "writer"}, headers=bearer(key)
        )
        assert_problem(refused, 403)
        assert_problem(await platform.get("/merchants/shop-a/keys", headers=bearer(key)), 403)
    assert (await platform.get("/merchants/shop-a/keys", headers=ADMIN)).json() == {"items": []}


async def test_a_reader_key_made_in_the_database_only_reads(platform: AsyncClient) -> None:
    key = await _make(platform, "viewer", "reader")
    assert (await platform.get("/stock/A", headers=bearer(key))).status_code == 404
    assert_problem(await platform.put("/stock/A", json={"quantity": 1}, headers=bearer(key)), 403)


async def test_a_keyed_retry_of_a_key_made_answers_it_again_without_the_key(
    platform: AsyncClient,
) -> None:
    body = {"name": "retried", "role": "writer"}
    headers = {**ADMIN, "Idempotency-Key": "make-retried"}
    first = await platform.post("/merchants/shop-a/keys", json=body, headers=headers)
    again = await platform.post("/merchants/shop-a/keys", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["key"] and again.json()["key"] is None
    assert {**first.json(), "key": None} == again.json()
    assert (await platform.get("/stock/A", headers=bearer(first.json()["key"]))).status_code == 404
    listed = (await platform.get("/merchants/shop-a/keys", headers=ADMIN)).json()["items"]
    assert [k["name"] for k in listed] == ["retried"]  # one key made, not two
    revoke = {**ADMIN, "Idempotency-Key": "revoke-retried"}
    assert (
        await platform.delete("/merchants/shop-a/keys/retried", headers=revoke)
    ).status_code == 204
    replayed = await platform.delete("/merchants/shop-a/keys/retried", headers=revoke)
    assert replayed.status_code == 204 and replayed.headers["Idempotent-Replayed"] == "true"


async def test_a_platform_key_of_the_database_names_its_merchant_and_acts_as_platform(
    database_url: str, db: Database
) -> None:
    await empty_tables(db)
    made = _cli(database_url, "keys", "add", "--platform", "--name", "night", "--role", "writer")
    key = made.stdout.strip()
    app = create_app(Settings(database_url=database_url))  # no RESTOCK_API_KEYS at all
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert_problem(await client.get("/stock/A"), 401)  # a key made closes the deployment
        assert_problem(await client.get("/stock/A", headers=bearer(key)), 400, "Merchant-Id")
        put = await client.put(
            "/stock/A", json={"quantity": 2}, headers=bearer(key, **{"Merchant-Id": "default"})
        )
        assert put.status_code == 200
        assert_problem(await client.get("/merchants", headers=bearer(key)), 403)  # not admin
    async with db.engine.connect() as conn:
        actors = (await conn.execute(sa.select(stock_movements.c.actor))).scalars().all()
    assert actors == ["platform:night"]


async def test_revoking_every_key_does_not_open_the_deployment_again(
    database_url: str, db: Database
) -> None:
    await empty_tables(db)
    key = _cli(
        database_url, "keys", "add", "--merchant", "default", "--name", "one", "--role", "writer"
    )
    _cli(database_url, "keys", "revoke", "--merchant", "default", "--name", "one")
    app = create_app(Settings(database_url=database_url))
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert_problem(await client.get("/stock/A"), 401)
        assert_problem(await client.get("/stock/A", headers=bearer(key.stdout.strip())), 401)


class _Lookups:
    """A database of keys for the keyring alone: counts its lookups."""

    def __init__(self) -> None:
        self.callers: dict[bytes, object] = {}
        self.lookups = 0

    async def api_key(self, digest: bytes, now: object, noted_before: object) -> object:
        self.lookups += 1
        await asyncio.sleep(0)
        return self.callers.get(digest)

    async def api_keys_exist(self) -> bool:
        return bool(self.callers)


async def test_the_keyring_looks_a_digest_up_once_per_ttl_and_concurrent_requests_share_it() -> (
    None
):
    from restock_service.access import ApiKeys, Caller, Role, digest

    now = [0.0]
    lookups = _Lookups()
    lookups.callers[digest("k")] = Caller("k", Role.WRITER, "shop-a")
    keyring = Keyring(ApiKeys(()), ttl_s=2.0, clock=lambda: now[0])
    found = await asyncio.gather(*(keyring.caller_of("k", lookups) for _ in range(40)))  # type: ignore[arg-type]
    assert {c.name for c in found if c} == {"k"} and lookups.lookups == 1
    del lookups.callers[digest("k")]  # revoked
    now[0] = 1.9
    assert await keyring.caller_of("k", lookups) is not None  # type: ignore[arg-type]
    now[0] = 2.0
    assert await keyring.caller_of("k", lookups) is None  # type: ignore[arg-type]
    assert lookups.lookups == 2
    for n in range(Keyring.KEPT + 5):  # guessed keys: kept, but never more than KEPT
        await keyring.caller_of(f"guess-{n}", lookups)  # type: ignore[arg-type]
    assert len(keyring._kept) <= Keyring.KEPT


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "restock_service", *args],
        env={
            **{k: v for k, v in os.environ.items() if k not in TESTS_OWN},
            "RESTOCK_DATABASE_URL": database_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_keys_commands_print_a_key_once_and_never_list_one(
    migrated_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTOCK_DATABASE_URL", migrated_url)
    for name in TESTS_OWN:  # the command refuses a RESTOCK_* variable it does not know
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, status: int = 0) -> str:
        assert main(list(args)) == status
        out, err = capsys.readouterr()
        if status == 0:
            return out
        assert out == ""  # a refusal prints no key, and nothing else on stdout
        return err.strip()

    made = run("keys", "add", "--merchant", "default", "--name", "sato", "--role", "reader")
    lines = made.splitlines()
    assert len(lines) == 1 and re.fullmatch(KEY_SHAPE, lines[0])
    platform = run("keys", "add", "--platform", "--name", "ops2", "--role", "admin").strip()
    listed = run("keys", "list")
    assert lines[0] not in listed and platform not in listed
    rows = [line.split("\t") for line in listed.splitlines()]
    assert [r[:3] for r in rows] == [["*", "ops2", "admin"], ["default", "sato", "reader"]]
    assert all(r[4] == "-" for r in rows)  # never used
    assert [line.split("\t")[1] for line in run("keys", "list", "--platform").splitlines()] == [
        "ops2"
    ]
    run("keys", "revoke", "--merchant", "default", "--name", "sato")
    assert "sato" not in run("keys", "list")

    def refused(*args: str) -> str:
        return run(*args, status=1)

    assert "may not begin with platform:" in refused(
        "keys", "add", "--merchant", "default", "--name", "platform:x", "--role", "writer"
    )
    assert "admin is a platform key's only" in refused(
        "keys", "add", "--merchant", "default", "--name", "x", "--role", "admin"
    )
    assert "no merchant 'shop-z'" in refused(
        "keys", "add", "--merchant", "shop-z", "--name", "x", "--role", "writer"
    )
    assert "is in use" in refused(
        "keys", "add", "--merchant", "default", "--name", "sato", "--role", "writer"
    )
    assert "no key 'sato'" in refused("keys", "revoke", "--merchant", "default", "--name", "sato")
    both = [{"name": "ops2", "key": "k-ops2", "role": "admin", "merchant": "*"}]
    monkeypatch.setenv("RESTOCK_API_KEYS", json.dumps(both))
    clash = run("serve", "--port", "1", status=2)
    assert "both in RESTOCK_API_KEYS and in the database: */ops2" in clash


@pytest.fixture
def migrated_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    _cli(url, "migrate")
    return url


@pytest.fixture
def own_pg_url(pg_admin_dsn: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own: its keys close every deployment on it."""
    with migrated_pg_database(pg_admin_dsn) as url:
        yield url


@pytest.mark.processes
async def test_a_revoked_key_is_refused_by_both_workers_within_5_seconds(
    own_pg_url: str, tmp_path: Path
) -> None:
    pg_database_url = own_pg_url
    made = _cli(
        pg_database_url, "keys", "add", "--merchant", "default", "--name", "w2", "--role", "reader"
    )
    key = made.stdout.strip()
    directory = tmp_path / "metrics"
    server = Server(pg_database_url, "--workers", "2", **{MULTIPROC_DIR: str(directory)})
    server.start()

    async def statuses(n: int) -> set[int]:
        async def one() -> int:  # a connection of its own: either worker may accept it
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                return (await client.get("/stock/A", headers=bearer(key))).status_code

        return set(await asyncio.gather(*(one() for _ in range(n))))

    try:
        sent = 0
        while len(served_by_worker(directory)) < 2:  # both workers have found the key
            assert sent < 2000, "one worker accepted every connection"
            assert await statuses(20) == {404}
            sent += 20
        _cli(pg_database_url, "keys", "revoke", "--merchant", "default", "--name", "w2")
        revoked_at = time.monotonic()
        last_served = None
        while time.monotonic() - revoked_at < 5.0:
            found = await statuses(20)
            if 404 in found:
                last_served = time.monotonic() - revoked_at
            elif found == {401}:
                break
        sent = 0
        while len(served_by_worker(directory, "unmatched", "401")) < 2:  # by each worker
            assert sent < 2000, "one worker accepted every connection"
            assert await statuses(20) == {401}
            sent += 20
        assert last_served is None or last_served < Keyring.TTL_S + 0.5, last_served
        print(f"the revoked key was last served {last_served or 0:.2f} s after the revocation")
    finally:
        server.close()
