"""The restock rules as pure functions: no database, no HTTP.

`decide` is checked rule by rule in the contract's order, with the precedence between rules;
`batch_messages` builds the 在庫戻し lines of the 「キャンセル申請 実行結果」 screen; the
order-number and sku checks report each offending entry as a field problem.
"""

from typing import Any

import pytest

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
    failure_line,
    restored_count_line,
)
from restock_service.rules import (
    Decision,
    Line,
    OrderResult,
    Snapshot,
    batch_messages,
    decide,
    duplicate_problems,
    order_no_problems,
)

LINES = (Line("TSHIRT-RED-M", 2), Line("CAP-01", 1), Line("SOCKS-3P", 4))
SNAPSHOT = Snapshot(Mall.RAKUTEN, LINES)
OTHER_MALL_SNAPSHOT = Snapshot(Mall.YAHOO, LINES)
ALL_SKUS = frozenset(line.sku for line in LINES)

RAKUTEN_NO = "354396-20260525-0036329794"
AMAZON_NO = "503-1234567-1234567"
FULLWIDTH_THREE = "\uff13"  # '３', a digit to `\d` but not an ASCII digit
ARABIC_INDIC_THREE = "\u0663"  # '٣'


def decision(**overrides: Any) -> Decision:
    """`decide` for an order that rule 8 would restore, with ``overrides`` applied."""
    args: dict[str, Any] = {
        "restore_stock": True,
        "mall_cancel_succeeded": True,
        "request_mall": Mall.RAKUTEN,
        "recorded": None,
        "snapshot": SNAPSHOT,
        "registered_skus": ALL_SKUS,
    }
    args.update(overrides)
    return decide(**args)


def assert_decision(
    d: Decision,
    code: Code,
    items: tuple[Line, ...] = (),
    missing_skus: tuple[str, ...] = (),
) -> None:
    assert d.code is code
    assert d.items == items
    assert d.missing_skus == missing_skus
    assert d.outcome is OUTCOME[code]
    assert d.message == MESSAGE[code]


# Conditions of the later rules, each of which the earlier rules must beat.
LATER_RULE_CONDITIONS = {
    "cancel_failed": {"mall_cancel_succeeded": False},
    "recorded_restored": {"recorded": RestockStatus.RESTORED},
    "recorded_failed": {"recorded": RestockStatus.FAILED},
    "recorded_resolved": {"recorded": RestockStatus.RESOLVED},
    "no_snapshot": {"snapshot": None},
    "mall_mismatch": {"snapshot": OTHER_MALL_SNAPSHOT},
    "product_missing": {"registered_skus": frozenset()},
    "everything_else_fine": {},
    "all_at_once": {
        "mall_cancel_succeeded": False,
        "recorded": RestockStatus.FAILED,
        "snapshot": OTHER_MALL_SNAPSHOT,
        "registered_skus": frozenset(),
    },
}


# --- rule 1: restore_stock false --------------------------------------------------------


@pytest.mark.parametrize("condition", LATER_RULE_CONDITIONS.values(), ids=LATER_RULE_CONDITIONS)
def test_restore_stock_false_is_not_requested_whatever_else_holds(
    condition: dict[str, Any],
) -> None:
    assert_decision(decision(restore_stock=False, **condition), Code.NOT_REQUESTED)


# --- rule 2: mall cancel failed ---------------------------------------------------------

AFTER_RULE_2 = {k: v for k, v in LATER_RULE_CONDITIONS.items() if "mall_cancel_succeeded" not in v}


@pytest.mark.parametrize("condition", AFTER_RULE_2.values(), ids=AFTER_RULE_2)
def test_failed_mall_cancel_is_skipped_even_when_a_record_exists_or_the_snapshot_is_off(
    condition: dict[str, Any],
) -> None:
    assert_decision(decision(mall_cancel_succeeded=False, **condition), Code.MALL_CANCEL_FAILED)


# --- rules 3 and 4: an existing record --------------------------------------------------

AFTER_RULE_4 = {
    "snapshot_present": {},
    "no_snapshot": {"snapshot": None},
    "mall_mismatch": {"snapshot": OTHER_MALL_SNAPSHOT},
    "product_missing": {"registered_skus": frozenset()},
    "mismatch_and_missing": {"snapshot": OTHER_MALL_SNAPSHOT, "registered_skus": frozenset()},
}


@pytest.mark.parametrize("condition", AFTER_RULE_4.values(), ids=AFTER_RULE_4)
def test_restored_record_is_already_restored_before_snapshot_mall_or_product_checks(
    condition: dict[str, Any],
) -> None:
    assert_decision(decision(recorded=RestockStatus.RESTORED, **condition), Code.ALREADY_RESTORED)


@pytest.mark.parametrize("status", [RestockStatus.FAILED, RestockStatus.RESOLVED])
@pytest.mark.parametrize(
    "condition",
    [c for k, c in AFTER_RULE_4.items() if k != "no_snapshot"],
    ids=[k for k in AFTER_RULE_4 if k != "no_snapshot"],
)
def test_failed_or_resolved_record_is_previously_failed_with_the_snapshot_lines(
    status: RestockStatus, condition: dict[str, Any]
) -> None:
    snapshot = condition.get("snapshot", SNAPSHOT)
    assert_decision(
        decision(recorded=status, **condition), Code.PREVIOUSLY_FAILED, items=snapshot.lines
    )


@pytest.mark.parametrize("status", [RestockStatus.FAILED, RestockStatus.RESOLVED])
def test_failed_record_without_a_snapshot_is_previously_failed_with_no_lines(
    status: RestockStatus,
) -> None:
    assert_decision(decision(recorded=status, snapshot=None), Code.PREVIOUSLY_FAILED)


# --- rule 5: no sync execution ----------------------------------------------------------


@pytest.mark.parametrize("registered", [ALL_SKUS, frozenset()], ids=["registered", "none"])
def test_order_without_sync_execution_is_no_sync_history(registered: frozenset[str]) -> None:
    assert_decision(decision(snapshot=None, registered_skus=registered), Code.NO_SYNC_HISTORY)


# --- rule 6: another mall's execution ---------------------------------------------------


def test_execution_of_another_mall_fails_as_mall_mismatch_with_the_snapshot_lines() -> None:
    assert_decision(
        decision(snapshot=OTHER_MALL_SNAPSHOT), Code.MALL_MISMATCH, items=OTHER_MALL_SNAPSHOT.lines
    )


@pytest.mark.parametrize("request_mall", [Mall.YAHOO, Mall.AMAZON])
def test_mall_mismatch_is_judged_against_the_request_mall(request_mall: Mall) -> None:
    assert_decision(decision(request_mall=request_mall), Code.MALL_MISMATCH, items=LINES)


def test_mall_mismatch_beats_product_not_found_and_lists_no_missing_skus() -> None:
    assert_decision(
        decision(snapshot=OTHER_MALL_SNAPSHOT, registered_skus=frozenset({"CAP-01"})),
        Code.MALL_MISMATCH,
        items=LINES,
    )


# --- rule 7: a sku no longer registered -------------------------------------------------


def test_unregistered_snapshot_sku_fails_as_product_not_found_naming_only_the_missing() -> None:
    assert_decision(
        decision(registered_skus=frozenset({"CAP-01"})),
        Code.PRODUCT_NOT_FOUND,
        items=LINES,
        missing_skus=("TSHIRT-RED-M", "SOCKS-3P"),
    )


def test_product_not_found_lists_missing_skus_in_snapshot_order_when_none_is_registered() -> None:
    assert_decision(
        decision(registered_skus=()),
        Code.PRODUCT_NOT_FOUND,
        items=LINES,
        missing_skus=("TSHIRT-RED-M", "CAP-01", "SOCKS-3P"),
    )


def test_registered_skus_may_be_the_locked_quantities_mapping() -> None:
    # The service passes {sku: quantity} of the locked rows; a quantity of 0 still counts.
    registered = {"TSHIRT-RED-M": 0, "CAP-01": -3}
    assert_decision(
        decision(registered_skus=registered),
        Code.PRODUCT_NOT_FOUND,
        items=LINES,
        missing_skus=("SOCKS-3P",),
    )


def test_sku_registration_is_case_sensitive() -> None:
    registered = {sku.lower() for sku in ALL_SKUS}
    d = decision(registered_skus=registered)
    assert d.code is Code.PRODUCT_NOT_FOUND
    assert d.missing_skus == tuple(line.sku for line in LINES)


# --- rule 8: restored -------------------------------------------------------------------


@pytest.mark.parametrize("mall", list(Mall))
def test_order_passing_every_check_is_restored_with_every_snapshot_line(mall: Mall) -> None:
    assert_decision(
        decision(request_mall=mall, snapshot=Snapshot(mall, LINES)), Code.RESTORED, items=LINES
    )


def test_extra_registered_skus_do_not_matter() -> None:
    assert_decision(decision(registered_skus=ALL_SKUS | {"UNRELATED"}), Code.RESTORED, items=LINES)


# --- outcome and message per code -------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (Code.NOT_REQUESTED, Outcome.SKIP),
        (Code.MALL_CANCEL_FAILED, Outcome.SKIP),
        (Code.ALREADY_RESTORED, Outcome.SKIP),
        (Code.PREVIOUSLY_FAILED, Outcome.SKIP),
        (Code.NO_SYNC_HISTORY, Outcome.SKIP),
        (Code.MALL_MISMATCH, Outcome.FAIL),
        (Code.PRODUCT_NOT_FOUND, Outcome.FAIL),
        (Code.RESTORED, Outcome.SUCCESS),
    ],
)
def test_each_code_has_the_contract_outcome_and_its_own_message(
    code: Code, outcome: Outcome
) -> None:
    d = Decision(code)
    assert d.outcome is outcome
    assert d.message == MESSAGE[code]


def test_every_code_has_a_distinct_message() -> None:
    assert set(MESSAGE) == set(Code)
    assert len(set(MESSAGE.values())) == len(Code)


# --- batch_messages ---------------------------------------------------------------------


def result(order_no: str, code: Code, items: tuple[Line, ...] = ()) -> OrderResult:
    return OrderResult(order_no, Decision(code, items))


def rakuten(n: int) -> str:
    return f"354396-20260525-{n:010d}"


def test_batch_with_restore_stock_false_has_no_messages() -> None:
    results = [result(rakuten(i), Code.NOT_REQUESTED) for i in range(3)]
    assert batch_messages(restore_stock=False, any_cancel_succeeded=True, results=results) == ()
    assert batch_messages(restore_stock=False, any_cancel_succeeded=False, results=results) == ()


def test_batch_with_restore_stock_false_has_no_messages_whatever_the_results_say() -> None:
    results = [
        result(rakuten(1), Code.RESTORED, LINES),
        result(rakuten(2), Code.PRODUCT_NOT_FOUND, LINES),
    ]
    assert batch_messages(restore_stock=False, any_cancel_succeeded=True, results=results) == ()


def test_batch_without_a_succeeded_cancel_says_exactly_that_no_cancel_succeeded() -> None:
    results = [result(rakuten(i), Code.MALL_CANCEL_FAILED) for i in range(3)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=False, results=results) == (
        NO_SUCCEEDED_CANCEL,
    )


def test_mixed_batch_lists_count_then_repeat_then_failures_in_request_order() -> None:
    results = [
        result(rakuten(9), Code.PRODUCT_NOT_FOUND, LINES),
        result(rakuten(1), Code.RESTORED, LINES),
        result(rakuten(2), Code.ALREADY_RESTORED),
        result(rakuten(3), Code.MALL_CANCEL_FAILED),
        result(rakuten(4), Code.NO_SYNC_HISTORY),
        result(rakuten(5), Code.ALREADY_RESTORED),
        result(rakuten(6), Code.RESTORED, LINES),
        result(rakuten(7), Code.PREVIOUSLY_FAILED, LINES),
        result(rakuten(0), Code.MALL_MISMATCH, LINES),
        result(rakuten(8), Code.RESTORED, LINES),
    ]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        restored_count_line(3),
        MESSAGE[Code.ALREADY_RESTORED],
        FAILURES_HEADER,
        failure_line(rakuten(9), MESSAGE[Code.PRODUCT_NOT_FOUND]),
        failure_line(rakuten(0), MESSAGE[Code.MALL_MISMATCH]),
    )


def test_single_restored_order_gives_the_count_line_for_one() -> None:
    results = [result(rakuten(1), Code.RESTORED, LINES)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        restored_count_line(1),
    )


@pytest.mark.parametrize("n", [2, 3, 17, 1000])
def test_count_line_counts_every_restored_order(n: int) -> None:
    results = [result(rakuten(i), Code.RESTORED, LINES) for i in range(n)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        restored_count_line(n),
    )
    assert str(n) in restored_count_line(n)
    assert restored_count_line(n) != restored_count_line(1)


def test_repeat_only_batch_gives_the_repeat_line_once() -> None:
    results = [result(rakuten(i), Code.ALREADY_RESTORED) for i in range(3)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        MESSAGE[Code.ALREADY_RESTORED],
    )


def test_failures_follow_one_header_in_request_order_not_sorted() -> None:
    order_nos = [rakuten(5), rakuten(2), rakuten(9), rakuten(1)]
    codes = [Code.MALL_MISMATCH, Code.PRODUCT_NOT_FOUND, Code.PRODUCT_NOT_FOUND, Code.MALL_MISMATCH]
    results = [result(n, c, LINES) for n, c in zip(order_nos, codes, strict=True)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        FAILURES_HEADER,
        *(failure_line(n, MESSAGE[c]) for n, c in zip(order_nos, codes, strict=True)),
    )


def test_failure_line_joins_order_number_and_message() -> None:
    line = failure_line(rakuten(1), MESSAGE[Code.MALL_MISMATCH])
    assert line.startswith(rakuten(1))
    assert line.endswith(MESSAGE[Code.MALL_MISMATCH])
    assert line == f"{rakuten(1)}: {MESSAGE[Code.MALL_MISMATCH]}"


@pytest.mark.parametrize(
    "codes",
    [
        [Code.PREVIOUSLY_FAILED],
        [Code.NO_SYNC_HISTORY],
        [Code.PREVIOUSLY_FAILED, Code.NO_SYNC_HISTORY, Code.MALL_CANCEL_FAILED],
    ],
    ids=["previously_failed", "no_sync_history", "skips_only"],
)
def test_batch_of_silent_skips_after_a_succeeded_cancel_has_no_messages(codes: list[Code]) -> None:
    results = [result(rakuten(i), c) for i, c in enumerate(codes)]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == ()


def test_previously_failed_is_not_listed_among_the_failures() -> None:
    results = [
        result(rakuten(1), Code.PREVIOUSLY_FAILED, LINES),
        result(rakuten(2), Code.MALL_MISMATCH, LINES),
    ]
    assert batch_messages(restore_stock=True, any_cancel_succeeded=True, results=results) == (
        FAILURES_HEADER,
        failure_line(rakuten(2), MESSAGE[Code.MALL_MISMATCH]),
    )


# --- order_no_problems ------------------------------------------------------------------


def locs(order_nos: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    return [(("orders", i, "order_no"), n) for i, n in enumerate(order_nos)]


@pytest.mark.parametrize(
    ("mall", "order_no"),
    [
        (Mall.RAKUTEN, RAKUTEN_NO),
        (Mall.RAKUTEN, "000000-00000000-0000000000"),
        (Mall.AMAZON, AMAZON_NO),
        (Mall.AMAZON, "999-9999999-9999999"),
    ],
)
def test_well_formed_order_numbers_have_no_problems(mall: Mall, order_no: str) -> None:
    assert order_no_problems(mall, locs([order_no])) == []


RAKUTEN_MALFORMED = {
    "amazon_shape": AMAZON_NO,
    "short_last_part": "354396-20260525-003632979",
    "long_last_part": "354396-20260525-00363297940",
    "short_first_part": "35439-20260525-0036329794",
    "no_dashes": "354396202605250036329794",
    "underscores": "354396_20260525_0036329794",
    "letter": "354396-20260525-003632979A",
    "fullwidth_digit": "354396-20260525-003632979" + FULLWIDTH_THREE,
    "arabic_indic_digit": ARABIC_INDIC_THREE + "54396-20260525-0036329794",
    "trailing_newline": RAKUTEN_NO + "\n",
    "leading_space": " " + RAKUTEN_NO,
    "prefix": "x" + RAKUTEN_NO,
    "empty": "",
}

AMAZON_MALFORMED = {
    "rakuten_shape": RAKUTEN_NO,
    "short_last_part": "503-1234567-123456",
    "long_first_part": "5031-1234567-1234567",
    "letter": "503-1234567-123456X",
    "fullwidth_digit": "503-1234567-123456" + FULLWIDTH_THREE,
    "arabic_indic_digit": "503-1234567-123456" + ARABIC_INDIC_THREE,
    "trailing_newline": AMAZON_NO + "\n",
    "suffix": AMAZON_NO + "-1",
}


@pytest.mark.parametrize(
    ("mall", "order_no"),
    [(Mall.RAKUTEN, n) for n in RAKUTEN_MALFORMED.values()]
    + [(Mall.AMAZON, n) for n in AMAZON_MALFORMED.values()],
    ids=[f"rakuten-{k}" for k in RAKUTEN_MALFORMED] + [f"amazon-{k}" for k in AMAZON_MALFORMED],
)
def test_order_number_of_the_wrong_shape_for_its_mall_is_one_problem_at_its_place(
    mall: Mall, order_no: str
) -> None:
    problems = order_no_problems(
        mall, locs([RAKUTEN_NO if mall is Mall.RAKUTEN else AMAZON_NO, order_no])
    )
    assert len(problems) == 1
    problem = problems[0]
    assert problem.loc == ("orders", 1, "order_no")
    assert problem.input == order_no
    assert problem.type == "order_no_shape"
    assert problem.message


def test_yahoo_accepts_any_order_number_shape() -> None:
    order_nos = [
        RAKUTEN_NO,
        AMAZON_NO,
        "store-10001",
        "abc",
        "x" * 64,
        "1" + FULLWIDTH_THREE,  # only the generic shape (checked by the schema) applies
        "",
    ]
    assert order_no_problems(Mall.YAHOO, locs(order_nos)) == []


@pytest.mark.parametrize(
    ("mall", "order_no"),
    [(Mall.RAKUTEN, RAKUTEN_NO), (Mall.AMAZON, AMAZON_NO), (Mall.YAHOO, "store-1")],
)
def test_repeated_order_number_is_a_problem_at_each_later_occurrence(
    mall: Mall, order_no: str
) -> None:
    other = {Mall.RAKUTEN: rakuten(7), Mall.AMAZON: "503-1234567-7777777", Mall.YAHOO: "s-7"}
    problems = order_no_problems(mall, locs([order_no, other[mall], order_no, order_no]))
    assert problems == [
        FieldProblem(("orders", 2, "order_no"), problems[0].message, order_no, "duplicate"),
        FieldProblem(("orders", 3, "order_no"), problems[1].message, order_no, "duplicate"),
    ]
    assert problems[0].message


def test_repeated_malformed_order_number_reports_shape_and_repetition() -> None:
    bad = "503-1234567-1234567"
    problems = order_no_problems(Mall.RAKUTEN, locs([bad, bad]))
    assert [(p.loc, p.type) for p in problems] == [
        (("orders", 0, "order_no"), "order_no_shape"),
        (("orders", 1, "order_no"), "order_no_shape"),
        (("orders", 1, "order_no"), "duplicate"),
    ]


def test_order_numbers_differing_only_in_case_are_not_repeats() -> None:
    assert order_no_problems(Mall.YAHOO, locs(["store-a", "STORE-A"])) == []


def test_every_malformed_order_number_of_a_batch_is_reported_in_order() -> None:
    order_nos = [RAKUTEN_NO, AMAZON_NO, rakuten(2), "bad", rakuten(3)]
    problems = order_no_problems(Mall.RAKUTEN, locs(order_nos))
    assert [p.loc for p in problems] == [("orders", 1, "order_no"), ("orders", 3, "order_no")]
    assert [p.input for p in problems] == [AMAZON_NO, "bad"]


def test_order_no_problems_takes_any_iterable_and_keeps_the_given_location() -> None:
    pairs = ((("order_no",), n) for n in [AMAZON_NO])
    problems = order_no_problems(Mall.RAKUTEN, pairs)
    assert [p.loc for p in problems] == [("order_no",)]


# --- duplicate_problems -------------------------------------------------------------


def sku_locs(skus: list[str]) -> list[tuple[tuple[str | int, ...], str]]:
    return [(("items", i, "sku"), s) for i, s in enumerate(skus)]


def test_distinct_skus_have_no_problems() -> None:
    assert duplicate_problems(sku_locs(["A", "B", "C"])) == []
    assert duplicate_problems([]) == []


def test_repeated_sku_is_a_problem_at_each_later_occurrence() -> None:
    problems = duplicate_problems(sku_locs(["A", "B", "A", "C", "B", "A"]))
    assert [(p.loc, p.input, p.type) for p in problems] == [
        (("items", 2, "sku"), "A", "duplicate"),
        (("items", 4, "sku"), "B", "duplicate"),
        (("items", 5, "sku"), "A", "duplicate"),
    ]
    assert all(p.message for p in problems)


def test_skus_differing_only_in_case_are_not_repeats() -> None:
    assert duplicate_problems(sku_locs(["cap-01", "CAP-01"])) == []


def test_record_lines_list_each_new_records_snapshot_by_order_no_marking_missing_skus() -> None:
    from restock_service.rules import record_lines

    new = {
        "B-2": Decision(Code.PRODUCT_NOT_FOUND, (Line("X", 1), Line("GONE", 2)), ("GONE",)),
        "A-1": Decision(Code.RESTORED, (Line("X", 3),)),
    }

    assert record_lines(new) == [
        ("A-1", "X", 0, 3, False),
        ("B-2", "X", 0, 1, False),
        ("B-2", "GONE", 1, 2, True),
    ]


def test_restock_moves_add_only_restored_orders_in_the_given_order() -> None:
    from restock_service.rules import restock_moves

    decisions = {
        "A-1": Decision(Code.RESTORED, (Line("X", 3), Line("Y", 1))),
        "B-2": Decision(Code.MALL_MISMATCH, (Line("X", 5),)),
        "C-3": Decision(Code.RESTORED, (Line("X", 2),)),
    }

    assert restock_moves(["C-3", "B-2", "A-1"], decisions) == [
        ("X", 2, "C-3"),
        ("X", 3, "A-1"),
        ("Y", 1, "A-1"),
    ]
