"""Small verbs for tests: register stock, record a sync, send a cancel batch, read the books."""

import asyncio
import contextlib
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from restock_service.config import Settings
from restock_service.store.statements import KEY_LOCK
from restock_service.tables import DEFAULT_MERCHANT, restocks, stock_movements

T = TypeVar("T")


@dataclass
class Database:
    """The tests' own engine on the database the app serves, to set up and to look."""

    engine: AsyncEngine
    settings: Settings

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async with self.engine.begin() as conn:
            return await work(conn)


def own_ledger_row(dialect: str) -> dict[str, Any]:
    """What a test's own INSERT of one ledger row of ``default`` adds: the merchant and, on
    SQLite, the row's id, the next of the merchant's as store/sqlite.py numbers them
    (PostgreSQL's sequence numbers its own)."""
    if dialect != "sqlite":
        return {"merchant_id": DEFAULT_MERCHANT}
    m = stock_movements.c
    last = sa.select(sa.func.coalesce(sa.func.max(m.id), 0) + 1)
    return {
        "merchant_id": DEFAULT_MERCHANT,
        "id": last.where(m.merchant_id == DEFAULT_MERCHANT).scalar_subquery(),
    }


def rakuten(n: int) -> str:
    """A well-formed Rakuten order number."""
    return f"354396-20260525-{n:010d}"


def amazon(n: int) -> str:
    return f"503-1234567-{n:07d}"


async def put_stock(client: AsyncClient, sku: str, quantity: int) -> None:
    response = await client.put(f"/stock/{sku}", json={"quantity": quantity})
    assert response.status_code == 200, response.text


async def quantity(client: AsyncClient, sku: str) -> int | None:
    response = await client.get(f"/stock/{sku}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    value: int = response.json()["quantity"]
    return value


async def quantities(client: AsyncClient, *skus: str) -> dict[str, int | None]:
    return {sku: await quantity(client, sku) for sku in skus}


async def sync(
    client: AsyncClient, order_no: str, items: dict[str, int], mall: str = "rakuten"
) -> None:
    response = await client.post(
        "/sync-executions",
        json={
            "order_no": order_no,
            "mall": mall,
            "items": [{"sku": sku, "quantity": q} for sku, q in items.items()],
        },
    )
    assert response.status_code == 201, response.text


def order(order_no: str, succeeded: bool = True, message: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"order_no": order_no, "mall_cancel_succeeded": succeeded}
    if message is not None:
        entry["mall_cancel_message"] = message
    return entry


async def cancel(
    client: AsyncClient,
    orders: list[dict[str, Any]],
    *,
    mall: str = "rakuten",
    restore_stock: bool = True,
) -> Response:
    return await client.post(
        "/restocks", json={"mall": mall, "restore_stock": restore_stock, "orders": orders}
    )


async def cancel_ok(client: AsyncClient, orders: list[dict[str, Any]], **kw: Any) -> Any:
    response = await cancel(client, orders, **kw)
    assert response.status_code == 200, response.text
    return response.json()


async def count_rows(db: Database, table: sa.Table) -> int:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def ledger(db: Database, reason: str | None = None) -> list[tuple[str, int, str | None]]:
    """(sku, delta, order_no) of the ledger rows, oldest first."""
    query = sa.select(stock_movements.c.sku, stock_movements.c.delta, stock_movements.c.order_no)
    if reason:
        query = query.where(stock_movements.c.reason == reason)
    async with db.engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(query.order_by(stock_movements.c.id))]


async def repeat_requests(db: Database, order_no: str) -> int:
    async with db.engine.connect() as conn:
        return (
            await conn.execute(
                sa.select(restocks.c.repeat_requests).where(restocks.c.order_no == order_no)
            )
        ).scalar_one()


@contextlib.asynccontextmanager
async def key_in_flight(
    db: Database, key: str, *, for_s: float, owner: str = "", merchant: str = DEFAULT_MERCHANT
) -> AsyncIterator[None]:
    """The caller's key as a request still in its write holds it, for ``for_s`` seconds;
    then that request dies, having written nothing. On PostgreSQL it holds the key's
    advisory lock (a keyed statement at work); on SQLite, the write lock, for which every
    other write waits."""
    held = asyncio.Event()

    async def hold() -> None:
        async with db.engine.connect() as conn, conn.begin():
            if db.dialect == "postgresql":
                lock = sa.text(f"SELECT pg_advisory_xact_lock({KEY_LOCK})")
                await conn.execute(lock, {"merchant": merchant, "key_owner": owner, "key": key})
            else:  # BEGIN IMMEDIATE (engine.py), sent with the first statement
                await conn.execute(sa.text("SELECT 1"))
            held.set()
            await asyncio.sleep(for_s)
            await conn.rollback()

    holder = asyncio.create_task(hold())
    await held.wait()
    try:
        yield
    finally:
        await holder


# --- the console ---------------------------------------------------------------------------

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: Response) -> str:
    """The CSRF token of a console page's form."""
    found = CSRF.search(page.text)
    assert found, page.text
    return html.unescape(found.group(1))


async def sign_in(client: AsyncClient, key: str, *, next: str | None = None) -> Response:
    """Sign in on the console with ``key``, as its sign-in form posts it."""
    page = await client.get("/console/login")
    assert page.status_code == 200, page.text
    form = {"api_key": key, "csrf_token": csrf_of(page)}
    if next is not None:
        form["next"] = next
    return await client.post("/console/login", data=form)
