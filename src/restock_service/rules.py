"""The restock rules as plain functions: data in, decisions out. No I/O, no framework."""

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from restock_service.errors import FieldProblem
from restock_service.messages import (
    FAILURES_HEADER,
    MESSAGE,
    NO_SUCCEEDED_CANCEL,
    OUTCOME,
    Code,
    Mall,
    Outcome,
    RestockStatus,
    SyncCode,
    failure_line,
    restored_count_line,
)


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An order's sync execution: its mall and its lines as they were deducted."""

    mall: Mall
    lines: tuple[Line, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    code: Code
    items: tuple[Line, ...] = ()
    missing_skus: tuple[str, ...] = ()

    @property
    def outcome(self) -> Outcome:
        return OUTCOME[self.code]

    @property
    def message(self) -> str:
        return MESSAGE[self.code]


@dataclass(frozen=True, slots=True)
class OrderResult:
    order_no: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class BatchResult:
    mall: Mall
    results: tuple[OrderResult, ...]
    messages: tuple[str, ...] = field(default=())

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.decision.outcome is outcome)


def decide(
    *,
    restore_stock: bool,
    mall_cancel_succeeded: bool,
    request_mall: Mall,
    recorded: RestockStatus | None,
    snapshot: Snapshot | None,
    registered_skus: Collection[str],
) -> Decision:
    """Apply the rule table: the first rule that holds decides the order."""
    if not restore_stock:
        return Decision(Code.NOT_REQUESTED)
    if not mall_cancel_succeeded:
        return Decision(Code.MALL_CANCEL_FAILED)
    if recorded is not None:
        return decide_repeat(recorded, snapshot)
    if snapshot is None:
        return Decision(Code.NO_SYNC_HISTORY)
    if snapshot.mall != request_mall:
        return Decision(Code.MALL_MISMATCH, snapshot.lines)
    missing = tuple(line.sku for line in snapshot.lines if line.sku not in registered_skus)
    if missing:
        return Decision(Code.PRODUCT_NOT_FOUND, snapshot.lines, missing)
    return Decision(Code.RESTORED, snapshot.lines)


def decide_orders(
    mall: Mall,
    order_nos: Sequence[str],
    recorded: Mapping[str, RestockStatus],
    snapshots: Mapping[str, Snapshot],
    registered_skus: Collection[str],
) -> dict[str, Decision]:
    """Decide orders whose mall cancel succeeded, with the checkbox on (rules 3 to 8)."""
    return {
        n: decide(
            restore_stock=True,
            mall_cancel_succeeded=True,
            request_mall=mall,
            recorded=recorded.get(n),
            snapshot=snapshots.get(n),
            registered_skus=registered_skus,
        )
        for n in order_nos
    }


def record_lines(new: Mapping[str, Decision]) -> list[tuple[str, str, int, int, bool]]:
    """The lines of new records: (order_no, sku, position, quantity, missing), by order_no."""
    return [
        (order_no, line.sku, position, line.quantity, line.sku in new[order_no].missing_skus)
        for order_no in sorted(new)
        for position, line in enumerate(new[order_no].items)
    ]


def restock_moves(
    order_nos: Iterable[str], decisions: Mapping[str, Decision]
) -> list[tuple[str, int, str]]:
    """What rule 8 adds to stock: (sku, quantity, order_no), in the given order of orders."""
    return [
        (line.sku, line.quantity, order_no)
        for order_no in order_nos
        if decisions[order_no].code is Code.RESTORED
        for line in decisions[order_no].items
    ]


@dataclass(frozen=True, slots=True)
class SyncDecision:
    order_no: str
    code: SyncCode
    missing_skus: tuple[str, ...] = ()


def decide_sync(
    order_no: str, *, recorded_before: bool, missing_skus: Sequence[str]
) -> SyncDecision:
    """A sync execution is recorded once per order, and only with every sku registered."""
    if recorded_before:
        return SyncDecision(order_no, SyncCode.ALREADY_RECORDED)
    if missing_skus:
        return SyncDecision(order_no, SyncCode.SKU_NOT_REGISTERED, tuple(missing_skus))
    return SyncDecision(order_no, SyncCode.RECORDED)


def decide_repeat(recorded: RestockStatus, snapshot: Snapshot | None) -> Decision:
    """Rules 3 and 4: an order whose restock was already recorded."""
    if recorded is RestockStatus.RESTORED:
        return Decision(Code.ALREADY_RESTORED)
    return Decision(Code.PREVIOUSLY_FAILED, snapshot.lines if snapshot else ())


def batch_messages(
    *, restore_stock: bool, any_cancel_succeeded: bool, results: Sequence[OrderResult]
) -> tuple[str, ...]:
    """The 在庫戻し lines of the 「キャンセル申請 実行結果」 screen, in the contract's order."""
    if not restore_stock:
        return ()
    if not any_cancel_succeeded:
        return (NO_SUCCEEDED_CANCEL,)
    lines: list[str] = []
    restored = sum(1 for r in results if r.decision.code is Code.RESTORED)
    if restored:
        lines.append(restored_count_line(restored))
    if any(r.decision.code is Code.ALREADY_RESTORED for r in results):
        lines.append(MESSAGE[Code.ALREADY_RESTORED])
    failed = [r for r in results if r.decision.outcome is Outcome.FAIL]
    if failed:
        lines.append(FAILURES_HEADER)
        lines.extend(failure_line(r.order_no, r.decision.message) for r in failed)
    return tuple(lines)


# Order numbers that a mall gives a fixed shape (ASCII digits only: `\\d` would admit others).
ORDER_NO_SHAPES: dict[Mall, tuple[re.Pattern[str], str]] = {
    Mall.RAKUTEN: (re.compile(r"[0-9]{6}-[0-9]{8}-[0-9]{10}"), "354396-20260525-0036329794"),
    Mall.AMAZON: (re.compile(r"[0-9]{3}-[0-9]{7}-[0-9]{7}"), "503-1234567-1234567"),
}


def order_no_problems(
    mall: Mall, order_nos: Iterable[tuple[tuple[str | int, ...], str]]
) -> list[FieldProblem]:
    """Each order number of the wrong shape for ``mall``, or repeated, as a field problem."""
    problems: list[FieldProblem] = []
    shape = ORDER_NO_SHAPES.get(mall)
    seen: set[str] = set()
    for loc, order_no in order_nos:
        if shape and not shape[0].fullmatch(order_no):
            problems.append(
                FieldProblem(
                    loc,
                    f"is not a {mall.value} order number (like {shape[1]})",
                    order_no,
                    "order_no_shape",
                )
            )
        if order_no in seen:
            problems.append(FieldProblem(loc, "appears more than once", order_no, "duplicate"))
        seen.add(order_no)
    return problems


def duplicate_problems(
    values: Iterable[tuple[tuple[str | int, ...], str]],
) -> list[FieldProblem]:
    """Each value (a sku, an order number) listed a second time, as a field problem."""
    seen: set[str] = set()
    problems = []
    for loc, value in values:
        if value in seen:
            problems.append(FieldProblem(loc, "appears more than once", value, "duplicate"))
        seen.add(value)
    return problems


# What a manual adjustment may leave a sku at, either way (Shopify's bound).
ADJUSTED_QUANTITY_LIMIT = 2_000_000_000


def adjustment_refused(quantity: int, delta: int) -> FieldProblem:
    """Why adding ``delta`` to ``quantity`` was refused: the quantity would pass the limit
    (which the adapters check as they write, given as ``limit``)."""
    after = quantity + delta
    return FieldProblem(
        ("delta",),
        f"would leave the quantity at {after:,} (it is {quantity:,}); an adjustment may "
        f"leave it between -{ADJUSTED_QUANTITY_LIMIT:,} and {ADJUSTED_QUANTITY_LIMIT:,}",
        input=delta,
    )
