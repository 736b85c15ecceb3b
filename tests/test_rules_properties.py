"""Properties of the rule function over generated inputs (hypothesis)."""

from hypothesis import given
from hypothesis import strategies as st

from restock_service.messages import (
    FAILURES_HEADER,
    MESSAGE,
    NO_SUCCEEDED_CANCEL,
    Code,
    Mall,
    Outcome,
    RestockStatus,
    failure_line,
    restored_count_line,
)
from restock_service.rules import Decision, Line, OrderResult, Snapshot, batch_messages, decide

SKUS = ["A", "B", "C", "D", "E", "F"]
CARRY_ITEMS = {Code.RESTORED, Code.PRODUCT_NOT_FOUND, Code.MALL_MISMATCH, Code.PREVIOUSLY_FAILED}

malls = st.sampled_from(list(Mall))
snapshots = st.builds(
    Snapshot,
    malls,
    st.lists(st.sampled_from(SKUS), min_size=1, max_size=4, unique=True).flatmap(
        lambda skus: st.tuples(
            *(st.builds(Line, st.just(s), st.integers(1, 100_000)) for s in skus)
        )
    ),
)
inputs = st.fixed_dictionaries(
    {
        "restore_stock": st.booleans(),
        "mall_cancel_succeeded": st.booleans(),
        "request_mall": malls,
        "recorded": st.none() | st.sampled_from(list(RestockStatus)),
        "snapshot": st.none() | snapshots,
        "registered_skus": st.frozensets(st.sampled_from(SKUS)),
    }
)


@given(inputs)
def test_restored_exactly_when_every_condition_of_rule_8_holds(args: dict) -> None:
    decision = decide(**args)
    snapshot = args["snapshot"]
    rule_8 = (
        args["restore_stock"]
        and args["mall_cancel_succeeded"]
        and args["recorded"] is None
        and snapshot is not None
        and snapshot.mall == args["request_mall"]
        and all(line.sku in args["registered_skus"] for line in snapshot.lines)
    )
    assert (decision.code is Code.RESTORED) == rule_8


@given(inputs)
def test_checkbox_off_and_failed_cancel_win_over_everything(args: dict) -> None:
    decision = decide(**args)
    if not args["restore_stock"]:
        assert decision == Decision(Code.NOT_REQUESTED)
    elif not args["mall_cancel_succeeded"]:
        assert decision == Decision(Code.MALL_CANCEL_FAILED)


@given(inputs)
def test_a_recorded_order_is_only_ever_skipped(args: dict) -> None:
    decision = decide(**args)
    if args["restore_stock"] and args["mall_cancel_succeeded"] and args["recorded"]:
        expected = (
            Code.ALREADY_RESTORED
            if args["recorded"] is RestockStatus.RESTORED
            else Code.PREVIOUSLY_FAILED
        )
        assert decision.code is expected
        assert decision.outcome is Outcome.SKIP


@given(inputs)
def test_items_and_missing_skus_come_only_from_the_snapshot(args: dict) -> None:
    decision = decide(**args)
    snapshot = args["snapshot"]
    if decision.code in CARRY_ITEMS and snapshot is not None:
        assert decision.items == snapshot.lines
    else:
        assert decision.items == ()
    if decision.code is Code.PRODUCT_NOT_FOUND:
        assert decision.missing_skus
        assert list(decision.missing_skus) == [
            line.sku for line in snapshot.lines if line.sku not in args["registered_skus"]
        ]
    else:
        assert decision.missing_skus == ()
    assert decision.message == MESSAGE[decision.code]


order_results = st.lists(
    st.builds(
        OrderResult,
        st.text("0123456789", min_size=1, max_size=6),
        st.builds(Decision, st.sampled_from(list(Code))),
    ),
    min_size=1,
    max_size=12,
)


@given(st.booleans(), st.booleans(), order_results)
def test_batch_lines_follow_the_screen_order(
    restore_stock: bool, any_succeeded: bool, results: list[OrderResult]
) -> None:
    lines = batch_messages(
        restore_stock=restore_stock, any_cancel_succeeded=any_succeeded, results=results
    )

    if not restore_stock:
        assert lines == ()
        return
    if not any_succeeded:
        assert lines == (NO_SUCCEEDED_CANCEL,)
        return
    restored = sum(r.decision.code is Code.RESTORED for r in results)
    failed = [r for r in results if r.decision.outcome is Outcome.FAIL]
    expected = [restored_count_line(restored)] if restored else []
    if any(r.decision.code is Code.ALREADY_RESTORED for r in results):
        expected.append(MESSAGE[Code.ALREADY_RESTORED])
    if failed:
        expected.append(FAILURES_HEADER)
        expected += [failure_line(r.order_no, r.decision.message) for r in failed]
    assert list(lines) == expected
