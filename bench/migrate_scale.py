"""Migration 0009 at scale: a large v1.2 database upgraded on PostgreSQL while writes go on.

    .venv/bin/python bench/migrate_scale.py [--rows 5000000] [--writers 4] [--rate 50]

It creates a throwaway database on the server of RESTOCK_TEST_PG_DSN (by default
postgresql://postgres@127.0.0.1:5432/postgres) and drops it at the end. It migrates it to
0008 and loads a v1.2 history with generate_series: 10,000 skus, --rows ledger rows, one
sync execution with 2 lines per 5 ledger rows, one restock with 2 lines per 50 (a tenth of
them failed), one idempotency key per 100; then VACUUM (ANALYZE) and CHECKPOINT.

Writers, each a connection, then send short write transactions of the service's three kinds
in turn, --rate a second each: record a sync execution (the execution, its 2 lines, 2 skus
deducted in sku order, 2 ledger rows), restock an order (the record, a line, the sku, a
ledger row), and a keyed adjustment (the key, the sku, a ledger row). After --baseline
seconds the migration runs as `restock-service migrate` runs it, the writes going on. A
writer writes as v1.2 does (naming no merchant) until every table has ``merchant_id``, and
from then on names ``default``, as v1.3 does (a v1.2 writer fails from step 3 on). Every
failed write is counted.

It prints each step of the migration, each index it builds and each short transaction,
with its time, the longest write that overlapped it, and the longest a writer's statement
was seen waiting for a lock (pg_stat_activity, sampled every 5 ms); then the writes'
latency, BEGIN to COMMIT, before and during the migration.
"""

import argparse
import asyncio
import itertools
import os
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from alembic import command
from sqlalchemy import event
from sqlalchemy.engine import Engine

from restock_service.config import Settings
from restock_service.faults import Refusal
from restock_service.migrations import alembic_config, migrate

ADMIN_DSN = os.environ.get("RESTOCK_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SKUS = 10_000
ORDER = "354396-20260525-"
TABLES = [
    "stock",
    "stock_movements",
    "sync_executions",
    "sync_execution_lines",
    "restocks",
    "restock_lines",
    "idempotency_keys",
]
# The steps of migration 0009 on PostgreSQL, each begun by the first statement that matches.
STEPS = [
    ("1 tables; merchant_id with its default", re.compile(r"CREATE TABLE|ADD COLUMN")),
    ("2 indexes built concurrently", re.compile(r"INDEX CONCURRENTLY")),
    ("3 keys swapped, one short transaction each", re.compile(r"LOCK TABLE")),
    ("4 foreign keys validated", re.compile(r"VALIDATE CONSTRAINT")),
]
# Within a step, the statements shown on lines of their own, each until the next one.
PARTS = [
    (re.compile(r"CREATE (?:UNIQUE )?INDEX CONCURRENTLY (\w+)"), "{}"),
    (re.compile(r"LOCK TABLE ([\w, ]+) IN"), "transaction: {}"),
    (re.compile(r"DROP COLUMN IF EXISTS (\w+)"), "transaction: {} dropped"),
]
WRITER = "migrate-scale-writer"  # the writers' application_name

# Each table's rows, numbered from $1 to $2, at times in order from 2026-01-01.
LOAD = [
    (
        "stock",
        "INSERT INTO stock (sku, quantity, created_at, updated_at)"
        " SELECT 'SKU-' || s, 1000000, t, t"
        " FROM generate_series($1::int, $2::int) s, CAST('2026-01-01' AS timestamptz) t",
    ),
    (
        "sync_executions",
        "INSERT INTO sync_executions (order_no, mall, executed_at, recorded_at)"
        f" SELECT '{ORDER}' || lpad(o::text, 10, '0'), 'rakuten', t, t"
        " FROM generate_series($1::int, $2::int) o,"
        "      LATERAL (SELECT '2026-01-01'::timestamptz + interval '1 second' * o) AS at(t)",
    ),
    (
        "sync_execution_lines",
        "INSERT INTO sync_execution_lines (order_no, sku, position, quantity)"
        f" SELECT '{ORDER}' || lpad(o::text, 10, '0'), 'SKU-' || (1 + (2 * o + p) % {SKUS}),"
        "        p, 1 + p"
        " FROM generate_series($1::int, $2::int) o, generate_series(0, 1) p",
    ),
    (
        "restocks",
        "INSERT INTO restocks (order_no, mall, status, code, requested_at, completed_at)"
        f" SELECT '{ORDER}' || lpad(o::text, 10, '0'), 'rakuten',"
        "        CASE WHEN o % 10 = 0 THEN 'failed' ELSE 'restored' END,"
        "        CASE WHEN o % 10 = 0 THEN 'product_not_found' ELSE 'restored' END, t, t"
        " FROM generate_series($1::int, $2::int) o,"
        "      LATERAL (SELECT '2026-01-01'::timestamptz + interval '5 seconds' * o) AS at(t)",
    ),
    (
        "restock_lines",
        "INSERT INTO restock_lines (order_no, sku, position, quantity, missing)"
        f" SELECT '{ORDER}' || lpad(o::text, 10, '0'), 'SKU-' || (1 + (2 * o + p) % {SKUS}),"
        "        p, 1 + p, o % 10 = 0 AND p = 1"
        " FROM generate_series($1::int, $2::int) o, generate_series(0, 1) p",
    ),
    (
        "idempotency_keys",
        "INSERT INTO idempotency_keys (owner, key, fingerprint, created_at, expires_at, receipt)"
        " SELECT 'sync-batch', 'key-' || k, sha256(k::text::bytea), t, t + interval '1 day',"
        "        convert_to('[]', 'UTF8')"
        " FROM generate_series($1::int, $2::int) k, CAST('2026-01-01' AS timestamptz) t",
    ),
    (
        "stock_movements",  # each sku's 'set' first; then deductions, restocks, adjustments
        "INSERT INTO stock_movements"
        " (sku, delta, quantity_after, reason, order_no, at, txid, actor)"
        f" SELECT 'SKU-' || (1 + g % {SKUS}),"
        f"        CASE WHEN g <= {SKUS} THEN 1000000 WHEN g % 10 < 7 THEN -1 ELSE 1 END,"
        "        1000000,"
        f"        CASE WHEN g <= {SKUS} THEN 'set' WHEN g % 10 < 7 THEN 'sync_execution'"
        "             WHEN g % 10 < 9 THEN 'restock' ELSE 'adjustment' END,"
        f"        CASE WHEN g > {SKUS} AND g % 10 < 9"
        f"             THEN '{ORDER}' || lpad((g / 5)::text, 10, '0') END,"
        "        '2026-01-01'::timestamptz + interval '5 ms' * g, 1000 + g / 2, 'sync-batch'"
        " FROM generate_series($1::int, $2::int) g",
    ),
]
CHUNK = 1_000_000  # rows a statement

# The service's writes, as v1.2 sends them (naming no merchant) and as v1.3 does.
WRITES = {
    "sync": "INSERT INTO sync_executions ({col}order_no, mall, executed_at, recorded_at)"
    " VALUES ({val}$1, 'rakuten', now(), now())",
    "sync_lines": "INSERT INTO sync_execution_lines ({col}order_no, sku, position, quantity)"
    " VALUES ({val}$1, $2, 0, 1), ({val}$1, $3, 1, 1)",
    "restock": "INSERT INTO restocks ({col}order_no, mall, status, code, requested_at,"
    " completed_at) VALUES ({val}$1, 'rakuten', 'restored', 'restored', now(), now())",
    "restock_line": "INSERT INTO restock_lines ({col}order_no, sku, position, quantity, missing)"
    " VALUES ({val}$1, $2, 0, 1, false)",
    "key": "INSERT INTO idempotency_keys ({col}owner, key, fingerprint, created_at, expires_at)"
    " VALUES ({val}'bench', $1, '\\x00', now(), now() + interval '1 day')",
    "move": "UPDATE stock SET quantity = quantity + $2, updated_at = now()"
    " WHERE {where}sku = $1 RETURNING quantity",
    "ledger": "INSERT INTO stock_movements"
    " ({col}sku, delta, quantity_after, reason, order_no, at, txid, actor)"
    " VALUES ({val}$1, $2, $3, $4, $5, now(), pg_current_xact_id()::text::bigint, 'bench')",
}
V12 = {kind: sql.format(col="", val="", where="") for kind, sql in WRITES.items()}
V13 = {
    kind: sql.format(col="merchant_id, ", val="'default', ", where="merchant_id = 'default' AND ")
    for kind, sql in WRITES.items()
}


@dataclass
class Write:
    start: float
    end: float
    ok: bool


@dataclass
class Statement:
    sql: str
    start: float


@dataclass
class Run:
    """What one run saw: the migration's statements and every write."""

    statements: list[Statement] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    lock_waits: list[tuple[float, float]] = field(default_factory=list)  # (when, waited s)
    errors: list[str] = field(default_factory=list)
    merchant_named: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def record_statements(self) -> None:
        """Note when each statement of any SQLAlchemy engine starts: here only the migration
        uses SQLAlchemy."""

        def before(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
            self.statements.append(Statement(sql, time.perf_counter()))

        event.listen(Engine, "before_cursor_execute", before)


async def load(dsn: str, rows: int) -> None:
    sizes = {
        "stock": SKUS,
        "sync_executions": rows // 5,
        "sync_execution_lines": rows // 5,
        "restocks": rows // 50,
        "restock_lines": rows // 50,
        "idempotency_keys": rows // 100,
        "stock_movements": rows,
    }
    conn = await asyncpg.connect(dsn)
    try:
        for table, sql in LOAD:
            started = time.perf_counter()
            for first in range(1, sizes[table] + 1, CHUNK):
                await conn.execute(sql, first, min(first + CHUNK - 1, sizes[table]))
            print(f"  {table}: {time.perf_counter() - started:.0f} s", flush=True)
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def watch_for_the_column(dsn: str, run: Run) -> None:
    """Tell the writers to name the merchant once every table has the column."""
    conn = await asyncpg.connect(dsn)
    try:
        while not run.stop.is_set():
            having = await conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attname = 'merchant_id'"
                " AND NOT attisdropped AND attrelid = ANY($1::text[]::regclass[])",
                TABLES,
            )
            if having == len(TABLES):
                run.merchant_named.set()
                return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def watch_the_lock_waits(dsn: str, run: Run) -> None:
    """Sample, every 5 ms, how long each writer's statement that waits for a lock has waited."""
    conn = await asyncpg.connect(dsn)
    try:
        while not run.stop.is_set():
            waits = await conn.fetch(
                "SELECT extract(epoch FROM clock_timestamp() - query_start)::float8"
                " FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                WRITER,
            )
            run.lock_waits.extend((time.perf_counter(), waited) for (waited,) in waits)
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def write(dsn: str, n: int, rate: float, run: Run) -> None:
    """Send this writer's transactions, paced at ``rate`` a second, until told to stop."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": WRITER})
    rng = random.Random(n)
    due = time.perf_counter()
    try:
        for i in itertools.count():
            if run.stop.is_set():
                return
            sql = V13 if run.merchant_named.is_set() else V12
            started = time.perf_counter()
            try:
                async with conn.transaction():
                    await KINDS[i % len(KINDS)](conn, sql, f"W{n}-{i}", rng)
                ok = True
            except asyncpg.PostgresError as exc:
                ok = False
                run.errors.append(f"{exc.__class__.__name__}: {exc}")
            run.writes.append(Write(started, time.perf_counter(), ok))
            due += 1 / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
    finally:
        await conn.close()


async def _move(
    conn: asyncpg.Connection,
    sql: dict[str, str],
    sku: str,
    delta: int,
    reason: str,
    order: str | None,
) -> None:
    after = await conn.fetchval(sql["move"], sku, delta)
    await conn.execute(sql["ledger"], sku, delta, after, reason, order)


# Each kind of write takes a name of its own: its order number, or its idempotency key.
async def _sync(
    conn: asyncpg.Connection, sql: dict[str, str], name: str, rng: random.Random
) -> None:
    skus = [f"SKU-{n}" for n in sorted(rng.sample(range(1, SKUS + 1), 2))]
    await conn.execute(sql["sync"], name)
    await conn.execute(sql["sync_lines"], name, *skus)
    for sku in skus:
        await _move(conn, sql, sku, -1, "sync_execution", name)


async def _restock(
    conn: asyncpg.Connection, sql: dict[str, str], name: str, rng: random.Random
) -> None:
    sku = f"SKU-{rng.randint(1, SKUS)}"
    await conn.execute(sql["restock"], name)
    await conn.execute(sql["restock_line"], name, sku)
    await _move(conn, sql, sku, 1, "restock", name)


async def _adjust(
    conn: asyncpg.Connection, sql: dict[str, str], name: str, rng: random.Random
) -> None:
    await conn.execute(sql["key"], name)
    await _move(conn, sql, f"SKU-{rng.randint(1, SKUS)}", 1, "adjustment", None)


KINDS = (_sync, _restock, _adjust)


def _steps(run: Run, ended: float) -> list[tuple[str, float, float]]:
    """Each step of the migration, and within it each part, with its start and end."""
    rows: list[tuple[str, float]] = []
    steps = iter(STEPS)
    following = next(steps, None)
    for statement in run.statements:
        if following and following[1].search(statement.sql):
            rows.append((following[0], statement.start))
            following = next(steps, None)
        for pattern, label in PARTS:
            if rows and (part := pattern.search(statement.sql)):
                rows.append(("    " + label.format(part[1]), statement.start))
    timed = []
    for i, (name, start) in enumerate(rows):  # a step lasts until the next, a part until any
        part = name.startswith(" ")
        later = (s for n, s in rows[i + 1 :] if part or not n.startswith(" "))
        timed.append((name, start, next(later, ended)))
    return timed


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}"


def _latencies(writes: list[Write]) -> list[float]:
    return sorted(w.end - w.start for w in writes)


def _percentile(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct))] if values else 0.0


def report(run: Run, args: argparse.Namespace, began: float, ended: float, server: str) -> None:
    print(
        f"\nmigration 0009 on {args.rows:,} ledger rows ({server}),"
        f" {args.writers} writers at {args.rate:g} writes/s each\n"
    )
    print(f"{'step':<58}{'seconds':>8}{'longest write':>15}{'longest lock wait':>19}")
    for name, start, end in _steps(run, ended):
        writes = [w.end - w.start for w in run.writes if w.start < end and w.end > start]
        waits = [waited for at, waited in run.lock_waits if start <= at < end]
        write, wait = max(writes, default=0.0), max(waits, default=0.0)
        print(f"{name:<58}{end - start:>8.2f}{_ms(write):>12} ms{_ms(wait):>16} ms")
    print(f"{'total (restock-service migrate)':<58}{ended - began:>8.2f}")

    print(
        f"\n{'writes':<10}{'count':>8}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'failed':>8}"
    )
    phases = {
        "before": [w for w in run.writes if w.end <= began],
        "during": [w for w in run.writes if w.start < ended and w.end > began],
    }
    spans = {
        "before": began - min((w.start for w in run.writes), default=began),
        "during": ended - began,
    }
    for phase, writes in phases.items():
        latencies = _latencies(writes)
        failed = sum(not w.ok for w in writes)
        print(
            f"{phase:<10}{len(writes):>8}{len(writes) / spans[phase]:>8.0f}"
            f"{_ms(_percentile(latencies, 0.50)):>9}{_ms(_percentile(latencies, 0.99)):>9}"
            f"{_ms(latencies[-1] if latencies else 0.0):>9}{failed:>8}"
        )
    for error in sorted(set(run.errors))[:5]:
        print(f"  failed: {error}")


async def verify(dsn: str, rows: int) -> None:
    """Every row is default's, none lost, and the schema is at 0009."""
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0009"
        for table in TABLES:
            others = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE merchant_id <> 'default'"
            )
            assert others == 0, f"{table}: {others} rows of another merchant"
        assert await conn.fetchval("SELECT count(*) FROM stock_movements") >= rows
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> int:
    name = f"restock_migrate_scale_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        server = "PostgreSQL " + await admin.fetchval("SHOW server_version")
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0008")
        print(f"loading a v1.2 history of {args.rows:,} ledger rows into {name}", flush=True)
        await load(dsn, args.rows)

        run = Run()
        run.record_statements()
        tasks = [asyncio.create_task(write(dsn, n, args.rate, run)) for n in range(args.writers)]
        tasks.append(asyncio.create_task(watch_for_the_column(dsn, run)))
        tasks.append(asyncio.create_task(watch_the_lock_waits(dsn, run)))
        print(f"writing for {args.baseline:g} s, then migrating", flush=True)
        await asyncio.sleep(args.baseline)
        began = time.perf_counter()
        try:
            await asyncio.to_thread(migrate, Settings(database_url=url))
        finally:
            ended = time.perf_counter()
            run.stop.set()
            await asyncio.gather(*tasks)
        report(run, args, began, ended, server)
        await verify(dsn, args.rows)
        return 1 if run.errors else 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="ledger rows to load")
    parser.add_argument("--writers", type=int, default=4, help="writing connections")
    parser.add_argument("--rate", type=float, default=50, help="writes a second per writer")
    parser.add_argument("--baseline", type=float, default=20, help="seconds of writes before")
    try:
        return asyncio.run(main_async(parser.parse_args()))
    except Refusal as refusal:  # the migration failed, as `restock-service migrate` says it
        print(refusal.printed(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
