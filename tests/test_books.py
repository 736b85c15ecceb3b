"""`restock-service check` proves the books, and names what breaks them."""

import asyncio
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa
from httpx import AsyncClient

from restock_service.books import check_books
from restock_service.tables import (
    DEFAULT_MERCHANT,
    restock_lines,
    stock,
    stock_movements,
    sync_execution_lines,
)
from tests.helpers import Database, cancel_ok, order, own_ledger_row, put_stock, rakuten, sync


async def _trade(client: AsyncClient) -> None:
    await put_stock(client, "A", 10)
    await put_stock(client, "B", 3)
    await put_stock(client, "GONE", 2)
    await sync(client, rakuten(1), {"A": 2, "B": 1})
    await sync(client, rakuten(2), {"A": 1})
    await cancel_ok(client, [order(rakuten(1))])
    await client.delete("/stock/GONE")


async def _problems(db: Database) -> tuple[str, ...]:
    async with db.engine.connect() as conn:
        return (await check_books(conn)).problems


async def _corrupt(db: Database, statement: sa.Executable) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(statement)


async def test_books_balance_after_sets_syncs_restocks_and_deletes(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)

    async with db.engine.connect() as conn:
        report = await check_books(conn)

    assert report.balanced
    assert (report.skus, report.restored) == (2, 1)


async def test_a_quantity_that_differs_from_its_ledger_is_named(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    await _corrupt(db, sa.update(stock).where(stock.c.sku == "B").values(quantity=99))

    assert await _problems(db) == ("sku B: quantity 99 but its ledger sums to 3",)


async def test_a_restored_line_without_its_ledger_row_is_named(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    await _corrupt(
        db,
        sa.delete(stock_movements).where(
            stock_movements.c.reason == "restock", stock_movements.c.sku == "A"
        ),
    )

    problems = await _problems(db)
    assert (
        f"restock {rakuten(1)} sku A: restored 2 but the ledger has 0 row(s) adding 0" in problems
    )
    assert "sku A: quantity 9 but its ledger sums to 7" in problems


async def test_a_restock_ledger_row_of_an_order_never_restored_is_named(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    await _corrupt(
        db,
        sa.insert(stock_movements).values(
            **own_ledger_row(db.dialect),
            sku="A",
            delta=1,
            quantity_after=0,
            reason="restock",
            order_no=rakuten(2),
            at=sa.func.current_timestamp(),
        ),
    )

    problems = await _problems(db)
    assert f"ledger adds 1 to sku A for order {rakuten(2)}, which has no restored line" in problems


async def _ledger_row(db: Database, reason: str, sku: str, order_no: str) -> int:
    async with db.engine.connect() as conn:
        row_id: int = (
            await conn.execute(
                sa.select(stock_movements.c.id).where(
                    stock_movements.c.reason == reason,
                    stock_movements.c.sku == sku,
                    stock_movements.c.order_no == order_no,
                )
            )
        ).scalar_one()
    return row_id


async def test_a_falsified_quantity_after_is_named_with_the_running_sum(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    row = await _ledger_row(db, "restock", "A", rakuten(1))
    await _corrupt(
        db, sa.update(stock_movements).where(stock_movements.c.id == row).values(quantity_after=99)
    )

    assert await _problems(db) == (
        f"ledger row {row} sku A: quantity_after 99 but the sku's deltas sum to 9 by then",
    )


async def test_a_falsified_delta_is_named_once_where_the_running_sum_departs(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    row = await _ledger_row(db, "sync_execution", "A", rakuten(1))
    await _corrupt(
        db, sa.update(stock_movements).where(stock_movements.c.id == row).values(delta=-3)
    )

    # The rows after it are off by the same 1: the same break, named once.
    assert await _problems(db) == (
        "sku A: quantity 9 but its ledger sums to 8",
        f"ledger row {row} sku A: quantity_after 8 but the sku's deltas sum to 7 by then",
    )


async def test_a_snapshot_line_changed_after_its_order_was_restored_is_named(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    await _corrupt(
        db,
        sa.update(sync_execution_lines)
        .where(sync_execution_lines.c.order_no == rakuten(1), sync_execution_lines.c.sku == "A")
        .values(quantity=5),
    )

    assert await _problems(db) == (
        f"restock {rakuten(1)} sku A: line of 2 but the order's sync execution has 5",
    )


async def test_failed_and_resolved_lines_that_differ_from_their_snapshots_are_named(
    client: AsyncClient, db: Database
) -> None:
    await _trade(client)
    await put_stock(client, "C", 5)
    await sync(client, rakuten(3), {"C": 1})
    await sync(client, rakuten(4), {"C": 2})
    await client.delete("/stock/C")
    await cancel_ok(client, [order(rakuten(3)), order(rakuten(4))])
    resolved = await client.post(
        f"/restocks/{rakuten(4)}/resolution", json={"note": "手動で加算済み", "resolved_by": "山田"}
    )
    assert resolved.status_code == 200, resolved.text
    assert await _problems(db) == ()

    await _corrupt(
        db,
        sa.update(restock_lines)
        .where(restock_lines.c.order_no == rakuten(3), restock_lines.c.sku == "C")
        .values(quantity=7),
    )
    await _corrupt(
        db, sa.delete(sync_execution_lines).where(sync_execution_lines.c.order_no == rakuten(4))
    )
    await _corrupt(
        db,
        sa.insert(sync_execution_lines).values(
            merchant_id=DEFAULT_MERCHANT, order_no=rakuten(1), sku="EXTRA", position=2, quantity=4
        ),
    )

    assert await _problems(db) == (
        f"restock {rakuten(1)} sku EXTRA: no line but the order's sync execution has 4",
        f"restock {rakuten(3)} sku C: line of 7 but the order's sync execution has 1",
        f"restock {rakuten(4)} sku C: line of 2 but the order's sync execution has none",
    )


@pytest.mark.processes
async def test_check_command_exits_0_with_a_summary_or_1_with_the_problems(
    client: AsyncClient, db: Database, database_url: str
) -> None:
    await _trade(client)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "restock_service", "check"],
            env={**os.environ, "RESTOCK_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )

    balanced = await asyncio.to_thread(run)
    await _corrupt(db, sa.update(stock).where(stock.c.sku == "B").values(quantity=99))
    broken = await asyncio.to_thread(run)
    row = await _ledger_row(db, "restock", "A", rakuten(1))
    await _corrupt(
        db, sa.update(stock_movements).where(stock_movements.c.id == row).values(quantity_after=99)
    )
    await _corrupt(
        db,
        sa.update(sync_execution_lines)
        .where(sync_execution_lines.c.order_no == rakuten(1), sync_execution_lines.c.sku == "A")
        .values(quantity=5),
    )
    more = await asyncio.to_thread(run)

    assert balanced.returncode == 0, balanced.stderr
    assert balanced.stdout.splitlines() == [
        "books balance at 1 merchant: 2 skus equal their ledger sums; "
        "1 restored restocks match their ledger rows"
    ]
    assert broken.returncode == 1
    assert broken.stdout.splitlines() == ["sku B: quantity 99 but its ledger sums to 3"]
    assert more.returncode == 1
    assert more.stdout.splitlines() == [
        "sku B: quantity 99 but its ledger sums to 3",
        f"ledger row {row} sku A: quantity_after 99 but the sku's deltas sum to 9 by then",
        f"restock {rakuten(1)} sku A: line of 2 but the order's sync execution has 5",
    ]
    assert more.stderr.splitlines()[-1] == "books do not balance: 3 problem(s)"


@pytest.mark.processes
def test_check_of_an_unreachable_database_is_one_line_not_a_traceback() -> None:
    from restock_service.faults import CANNOT_REACH
    from tests.servers import free_port

    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "restock_service", "check"],
        env={
            **os.environ,
            "RESTOCK_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/none",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    where = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none"
    error = f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})"
    assert result.stderr.splitlines() == [
        "restock-service: " + CANNOT_REACH.format(where=where, error=error)
    ]


@pytest.mark.processes
async def test_check_counts_the_merchants_and_names_a_problem_at_any_but_default(
    client: AsyncClient, db: Database, database_url: str
) -> None:
    await _trade(client)  # default's
    await client.put("/merchants/shop-a", json={"name": "A"})
    client.headers["Merchant-Id"] = "shop-a"
    await _trade(client)  # the same skus and orders, shop-a's own

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "restock_service", "check", *args],
            env={**os.environ, "RESTOCK_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
        )

    every = await asyncio.to_thread(run)
    await _corrupt(
        db,
        sa.update(stock)
        .where(stock.c.merchant_id == "shop-a", stock.c.sku == "B")
        .values(quantity=99),
    )
    broken = await asyncio.to_thread(run)
    theirs = await asyncio.to_thread(run, "--merchant", "shop-a")
    ours = await asyncio.to_thread(run, "--merchant", "default")
    nobody = await asyncio.to_thread(run, "--merchant", "shop-z")

    assert every.returncode == 0, every.stderr
    assert every.stdout.startswith("books balance at 2 merchants: 4 skus equal their ledger sums")
    assert (broken.returncode, theirs.returncode) == (1, 1)
    assert (
        broken.stdout.splitlines()
        == theirs.stdout.splitlines()
        == ["merchant shop-a: sku B: quantity 99 but its ledger sums to 3"]
    )
    assert ours.returncode == 0
    assert ours.stdout.startswith("books balance at 1 merchant: 2 skus")
    assert nobody.returncode == 2
    assert nobody.stderr.strip() == "restock-service: no merchant 'shop-z' is registered"
