"""Every statement either adapter runs on a merchant's data constrains its merchant_id.

This is Citus's rule for a statement that stays on one shard of a table distributed by
merchant_id (docs/scaling.md), and the first line of contract v1.3's isolation: a statement
that names no merchant could read or change another's rows. Every store call on a
merchant's data is made once, at one merchant, and each statement it sent to the database
is planned there (EXPLAIN, not run again): every read of a merchant's table in the plan must
be bounded by ``merchant_id`` equal to that merchant. An INSERT names it by construction (the
column has no default), and tests/test_backends_agree.py proves that it names the right one.
"""

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from restock_service import idempotency
from restock_service.idempotency import Keyed
from restock_service.messages import Mall
from restock_service.schemas import SyncExecutionIn
from restock_service.scope import Scope
from restock_service.store import Store
from restock_service.store.postgres import PostgresStore
from restock_service.tables import metadata
from tests.helpers import Database, rakuten

MERCHANT = "scoped-shop"
BOUND = re.compile(rf"\bmerchant_id(\)::text)? = '{MERCHANT}'::text")  # in PostgreSQL's plans
# The tables of merchants' data (distributed by merchant_id on Citus); merchants and api_keys
# are the platform's, read before a merchant is known (reference tables: docs/scaling.md).
REFERENCE_TABLES = {"merchants", "api_keys"}
MERCHANT_TABLES = {t.name for t in metadata.sorted_tables if "merchant_id" in t.c}
MERCHANT_TABLES -= REFERENCE_TABLES
# Store calls on no merchant's data: the deployment's housekeeping, its console sessions,
# and the platform's calls on merchants.
UNSCOPED = {
    "purge_keys", "sign_out", "signed_out", "purge_sign_outs", "schema_revision",
    "merchant", "merchants", "put_merchant",
    "api_key", "api_keys_exist", "add_api_key", "api_keys", "revoke_api_key",
    "failures_by_merchant",
}  # fmt: skip
NOT_CALLS = {"settings", "watch_pool", "close"}


class Recording:
    """The store, noting the name of each call made through it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.called: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self.store, name)


def _execution(order_no: str, **items: int) -> SyncExecutionIn:
    return SyncExecutionIn.model_validate(
        {
            "order_no": order_no,
            "mall": "rakuten",
            "items": [{"sku": s, "quantity": q} for s, q in items.items()],
        }
    )


async def _every_call(store: Any) -> None:
    """Each store call on a merchant's data, at MERCHANT, along the paths its statements
    take: a restock restored in one statement and one written after the rules decided, a
    failed restock resolved, a ledger page and a sku that never was, a keyed write."""
    now = datetime.now(UTC)
    scope = Scope(MERCHANT, "k")
    for sku in ("A", "B"):
        await store.set_stock(scope, sku, 10, now)
    await store.record_sync_executions(
        scope, [_execution(rakuten(1), A=1), _execution(rakuten(2), B=2)], now
    )
    await store.restock(scope, Mall.RAKUTEN, [rakuten(1)], now)  # restored at once
    await store.delete_stock(scope, "B", now)
    await store.restock(scope, Mall.RAKUTEN, [rakuten(1), rakuten(2), rakuten(3)], now)
    await store.resolve_restock(scope, rakuten(2), "done", "staff", now)
    await store.adjust_stock(scope, "A", 1, "count", rakuten(1), now, limit=10**9)
    await store.stock(scope, "A")
    await store.quantities(scope, ["A", "B"])
    await store.movements(scope, "A", 0, 10)
    await store.movements(scope, "NEVER", 0, 10)  # no rows: was it ever registered?
    await store.order_movements(scope, rakuten(1))
    await store.ledger_window(scope, (-1, 0), 10)
    await store.sync_execution(scope, rakuten(1))
    await store.restock_record(scope, rakuten(1))
    for newest_first in (False, True):
        await store.restock_records(
            scope, status=None, mall=None, after=(now, ""), limit=10, newest_first=newest_first
        )
    await store.failure_counts(scope)
    claim = idempotency.new_claim(MERCHANT, "k", "key-1", b"f" * 32, now, ttl_s=60)
    await store.adjust_stock(Scope(MERCHANT, "k", Keyed(claim)), "A", 1, "x", None, now, limit=9)
    await store.key(MERCHANT, "k", "key-1")


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.fixture
def sent(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """What the app's store sends to the database: (statement, parameters)."""
    store = app.state.store
    statements: list[tuple[str, Any]] = []
    if isinstance(store, PostgresStore):
        run = store._run

        async def noting(query: Any, params: dict[str, Any]) -> Any:
            statements.append((query.text, query.args(params)))
            return await run(query, params)

        monkeypatch.setattr(store, "_run", noting)
        yield statements
        return

    def note(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        many = isinstance(parameters, list)
        statements.append((statement, parameters[0] if many else parameters))

    engine = store.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", note)
    yield statements
    sa.event.remove(engine, "before_cursor_execute", note)


async def test_every_statement_on_a_merchants_data_is_bounded_by_its_merchant_id(
    app: FastAPI, db: Database, sent: list[tuple[str, Any]]
) -> None:
    store = Recording(app.state.store)
    await _every_call(store)

    every_call = _public(Store) - UNSCOPED - NOT_CALLS
    assert every_call <= store.called, f"not called here: {sorted(every_call - store.called)}"
    assert sent
    unbounded = []
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        for statement, parameters in sent:
            if db.dialect == "postgresql":
                plan = await raw.driver_connection.fetchval(  # type: ignore[union-attr]
                    "EXPLAIN (FORMAT JSON) " + statement, *parameters
                )
                if isinstance(plan, str):  # (SQLAlchemy's connections decode json)
                    plan = json.loads(plan)
                reads = list(_pg_reads(plan[0]["Plan"]))
            else:
                cursor = raw.driver_connection  # type: ignore[union-attr]
                rows = await (
                    await cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                ).fetchall()
                ours = MERCHANT in parameters  # the one value every ``?`` of it may be
                reads = [(t, bound and ours) for t, bound in _sqlite_reads(r[3] for r in rows)]
            unbounded += [(table, bound, statement) for table, bound in reads if not bound]
    assert unbounded == [], "\n\n".join(f"{t} read unbounded in:\n{s}" for t, _, s in unbounded)


def _pg_reads(node: dict[str, Any]) -> Iterator[tuple[str, bool]]:
    """Each read of a merchant's table in a PostgreSQL plan, and whether its conditions
    bound it to MERCHANT. A ModifyTable node writes what its child nodes read."""
    table = node.get("Relation Name")
    if table in MERCHANT_TABLES and node["Node Type"] != "ModifyTable":
        conditions = " ".join(
            str(node.get(key, ""))
            for key in ("Index Cond", "Filter", "Recheck Cond", "Join Filter")
        )
        yield table, BOUND.search(conditions) is not None
    for child in node.get("Plans", ()):
        yield from _pg_reads(child)


def _sqlite_reads(details: Iterator[str]) -> Iterator[tuple[str, bool]]:
    """Each read of a merchant's table in SQLite's query plan (``SCAN t`` or ``SEARCH t
    USING … (merchant_id=? AND …)``), and whether the index bounds it by merchant_id."""
    for detail in details:
        words = detail.split()
        if len(words) < 2 or words[0] not in {"SCAN", "SEARCH"} or words[1] not in MERCHANT_TABLES:
            continue
        yield words[1], words[0] == "SEARCH" and "(merchant_id=?" in detail
