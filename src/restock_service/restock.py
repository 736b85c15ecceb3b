"""The restock use case: decide every order of a cancel batch and apply rule 8 exactly once.

One write transaction per batch, with a fixed number of statements whatever its size:

1. read the orders' restock records and sync snapshots;
2. lock the snapshot skus that may be restored, in sku order;
3. claim new records with ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (the primary key
   on ``restocks.order_no`` is what makes a restock happen at most once, across processes);
4. write the claimed records' lines, add the restored lines to stock, write the ledger;
5. count the repeats, which also tells how the orders that lost a race were recorded.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from restock_service import cursors, restock_pg
from restock_service.db import Database
from restock_service.errors import Conflict, InvalidRequest, NotFound
from restock_service.messages import MESSAGE, RECORDED_STATUS, Code, Mall, RestockStatus
from restock_service.rules import (
    BatchResult,
    Decision,
    Line,
    OrderResult,
    Snapshot,
    batch_messages,
    decide,
    decide_orders,
    decide_repeat,
    order_no_problems,
    record_lines,
    restock_moves,
)
from restock_service.schemas import (
    LineOut,
    Resolution,
    ResolutionIn,
    RestockPage,
    RestockRecordOut,
    RestockRequest,
)
from restock_service.sql import insert_ignoring_conflicts, lock_stock, move_stock, one_of
from restock_service.tables import (
    UTCDateTime,
    restock_lines,
    restocks,
    sync_execution_lines,
    sync_executions,
)

log = logging.getLogger(__name__)


async def restock_batch(db: Database, request: RestockRequest, now: datetime) -> BatchResult:
    """Decide each order of ``request`` and restore the ones rule 8 allows, atomically."""
    problems = order_no_problems(
        request.mall,
        ((("orders", i, "order_no"), o.order_no) for i, o in enumerate(request.orders)),
    )
    if problems:
        raise InvalidRequest(problems)

    candidates = [o.order_no for o in request.orders if o.mall_cancel_succeeded]
    decided: dict[str, Decision] = {}
    if request.restore_stock and candidates:
        if db.dialect == "postgresql":

            async def on_driver(driver: Any) -> dict[str, Decision]:
                return await restock_pg.apply(driver, request.mall, candidates, now)

            decided = await db.write_driver(on_driver)
        else:

            async def work(conn: AsyncConnection) -> dict[str, Decision]:
                return await _apply(conn, request.mall, candidates, now)

            decided = await db.write(work)

    results = tuple(
        OrderResult(
            o.order_no,
            decided.get(o.order_no)
            or decide(
                restore_stock=request.restore_stock,
                mall_cancel_succeeded=o.mall_cancel_succeeded,
                request_mall=request.mall,
                recorded=None,
                snapshot=None,
                registered_skus=(),
            ),
        )
        for o in request.orders
    )
    for r in results:
        log.info(
            "restock decision order_no=%s mall=%s code=%s",
            r.order_no,
            request.mall.value,
            r.decision.code.value,
            extra={"order_no": r.order_no, "mall": request.mall.value, "code": r.decision.code},
        )
    messages = batch_messages(
        restore_stock=request.restore_stock,
        any_cancel_succeeded=bool(candidates),
        results=results,
    )
    return BatchResult(request.mall, results, messages)


async def _apply(
    conn: AsyncConnection, mall: Mall, order_nos: list[str], now: datetime
) -> dict[str, Decision]:
    recorded, snapshots = await _load(conn, order_nos)
    restorable = [
        n for n in order_nos if n not in recorded and n in snapshots and snapshots[n].mall == mall
    ]
    registered = await lock_stock(
        conn, {line.sku for n in restorable for line in snapshots[n].lines}
    )
    decisions = decide_orders(mall, order_nos, recorded, snapshots, registered)

    new = {n: d for n, d in decisions.items() if d.code in RECORDED_STATUS}
    claimed = await _claim(conn, mall, new, now)
    won = [n for n in order_nos if n in claimed]
    await move_stock(conn, restock_moves(won, new), current=registered, reason="restock", at=now)

    # Orders recorded before, and orders another transaction claimed first: both repeats.
    repeats = [n for n in order_nos if n in recorded or (n in new and n not in claimed)]
    for order_no, status in await _count_repeats(conn, repeats):
        decisions[order_no] = decide_repeat(status, snapshots.get(order_no))
    return decisions


async def _load(
    conn: AsyncConnection, order_nos: list[str]
) -> tuple[dict[str, RestockStatus], dict[str, Snapshot]]:
    recorded = {
        order_no: RestockStatus(status)
        for order_no, status in await conn.execute(
            sa.select(restocks.c.order_no, restocks.c.status).where(
                one_of(conn, restocks.c.order_no, order_nos)
            )
        )
    }
    rows = await conn.execute(
        sa.select(
            sync_executions.c.order_no,
            sync_executions.c.mall,
            sync_execution_lines.c.sku,
            sync_execution_lines.c.quantity,
        )
        .join(sync_execution_lines)
        .where(one_of(conn, sync_executions.c.order_no, order_nos))
        .order_by(sync_executions.c.order_no, sync_execution_lines.c.position)
    )
    lines: dict[str, list[Line]] = {}
    malls: dict[str, Mall] = {}
    for order_no, order_mall, sku, quantity in rows:
        malls[order_no] = Mall(order_mall)
        lines.setdefault(order_no, []).append(Line(sku, quantity))
    snapshots = {n: Snapshot(malls[n], tuple(ls)) for n, ls in lines.items()}
    return recorded, snapshots


async def _claim(
    conn: AsyncConnection, mall: Mall, new: dict[str, Decision], now: datetime
) -> set[str]:
    """Insert the new records; return the orders this transaction won."""
    if not new:
        return set()
    # Sorted, so concurrent batches take the key locks in one order.
    order_nos = sorted(new)
    claimed = set(
        (
            await conn.execute(
                insert_ignoring_conflicts(conn, restocks)
                .values(
                    [
                        {
                            "order_no": n,
                            "mall": mall.value,
                            "status": RECORDED_STATUS[new[n].code].value,
                            "code": new[n].code.value,
                            "requested_at": now,
                            "completed_at": now,
                            "repeat_requests": 0,
                        }
                        for n in order_nos
                    ]
                )
                .returning(restocks.c.order_no)
            )
        ).scalars()
    )
    lines = [
        {"order_no": n, "sku": sku, "position": i, "quantity": q, "missing": missing}
        for n, sku, i, q, missing in record_lines(new)
        if n in claimed
    ]
    if lines:
        await conn.execute(sa.insert(restock_lines), lines)
    return claimed


async def _count_repeats(
    conn: AsyncConnection, order_nos: Iterable[str]
) -> list[tuple[str, RestockStatus]]:
    order_nos = sorted(order_nos)
    if not order_nos:
        return []
    rows = await conn.execute(
        sa.update(restocks)
        .where(one_of(conn, restocks.c.order_no, order_nos))
        .values(repeat_requests=restocks.c.repeat_requests + 1)
        .returning(restocks.c.order_no, restocks.c.status)
    )
    return [(order_no, RestockStatus(status)) for order_no, status in rows]


async def get_restock(db: Database, order_no: str) -> RestockRecordOut:
    """The recorded restock of ``order_no``, with its lines."""
    if db.dialect == "postgresql":
        rows = await db.read_driver(lambda driver: restock_pg.record(driver, order_no))
        if not rows:
            raise NotFound(f"no restock is recorded for order {order_no}")
        return _record_out(rows[0], [r for r in rows if r["sku"] is not None])

    async def work(conn: AsyncConnection) -> RestockRecordOut:
        record = (
            await conn.execute(sa.select(restocks).where(restocks.c.order_no == order_no))
        ).first()
        if record is None:
            raise NotFound(f"no restock is recorded for order {order_no}")
        return (await _with_lines(conn, [record]))[0]

    return await db.read(work)


LIST_CURSOR = "restocks"


async def list_restocks(
    db: Database,
    *,
    status: RestockStatus | None,
    mall: Mall | None,
    limit: int,
    cursor: str | None,
) -> RestockPage:
    """Recorded restocks, oldest ``requested_at`` first, one keyset page at a time."""
    query = sa.select(restocks)
    if status is not None:
        query = query.where(restocks.c.status == status.value)
    if mall is not None:
        query = query.where(restocks.c.mall == mall.value)
    if cursor is not None:
        at, order_no = cursors.decode(cursor, LIST_CURSOR, (str, str), param="cursor")
        try:
            after = datetime.fromisoformat(at)
            if after.tzinfo is None:
                raise ValueError("no offset")
            after = after.astimezone(UTC)
        except (ValueError, OverflowError):
            raise cursors.invalid(cursor, param="cursor") from None
        query = query.where(
            sa.tuple_(restocks.c.requested_at, restocks.c.order_no)
            > sa.tuple_(
                sa.bindparam(None, after, type_=UTCDateTime),
                sa.bindparam(None, order_no, type_=sa.String),
            )
        )
    query = query.order_by(restocks.c.requested_at, restocks.c.order_no).limit(limit + 1)

    async def work(conn: AsyncConnection) -> RestockPage:
        rows = (await conn.execute(query)).all()
        page = await _with_lines(conn, rows[:limit])
        last = page[-1] if len(rows) > limit else None
        return RestockPage(
            items=page,
            next_cursor=cursors.encode(LIST_CURSOR, last.requested_at.isoformat(), last.order_no)
            if last
            else None,
        )

    return await db.read(work)


async def resolve_restock(
    db: Database, order_no: str, resolution: ResolutionIn, now: datetime
) -> RestockRecordOut:
    """Mark a failed restock as settled by hand; stock is not touched."""

    async def work(conn: AsyncConnection) -> RestockRecordOut:
        record = (
            await conn.execute(
                sa.update(restocks)
                .where(
                    restocks.c.order_no == order_no,
                    restocks.c.status == RestockStatus.FAILED.value,
                )
                .values(
                    status=RestockStatus.RESOLVED.value,
                    resolution_note=resolution.note,
                    resolved_by=resolution.resolved_by,
                    resolved_at=now,
                )
                .returning(*restocks.c)
            )
        ).first()
        if record is None:
            status = (
                await conn.execute(
                    sa.select(restocks.c.status).where(restocks.c.order_no == order_no)
                )
            ).scalar_one_or_none()
            if status is None:
                raise NotFound(f"no restock is recorded for order {order_no}")
            raise Conflict(f"the restock of order {order_no} is {status}, not failed")
        return (await _with_lines(conn, [record]))[0]

    return await db.write(work)


async def _with_lines(
    conn: AsyncConnection, records: Sequence[sa.Row[Any]]
) -> list[RestockRecordOut]:
    """The records as the API shows them, with their lines read in one statement."""
    if not records:
        return []
    lines: dict[str, list[Any]] = {}
    for line in await conn.execute(
        sa.select(
            restock_lines.c.order_no,
            restock_lines.c.sku,
            restock_lines.c.quantity,
            restock_lines.c.missing,
        )
        .where(one_of(conn, restock_lines.c.order_no, (r.order_no for r in records)))
        .order_by(restock_lines.c.order_no, restock_lines.c.position)
    ):
        lines.setdefault(line.order_no, []).append(line._mapping)
    return [_record_out(r._mapping, lines.get(r.order_no, [])) for r in records]


def _record_out(record: Mapping[Any, Any], lines: Sequence[Mapping[Any, Any]]) -> RestockRecordOut:
    """A restock record as the API shows it (a row of ``restocks`` and its lines)."""
    code = Code(record["code"])
    resolved_at = record["resolved_at"]
    return RestockRecordOut(
        order_no=record["order_no"],
        mall=record["mall"],
        status=record["status"],
        code=code,
        message=MESSAGE[code],
        items=[LineOut(sku=r["sku"], quantity=r["quantity"]) for r in lines],
        missing_skus=[r["sku"] for r in lines if r["missing"]],
        requested_at=_utc(record["requested_at"]),
        completed_at=_utc(record["completed_at"]),
        repeat_requests=record["repeat_requests"],
        resolution=Resolution(
            note=record["resolution_note"],
            resolved_by=record["resolved_by"],
            resolved_at=_utc(resolved_at),
        )
        if resolved_at is not None
        else None,
    )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
