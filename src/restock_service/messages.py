"""The outcome codes and the exact merchant-facing texts: their only home.

The service and the tests both import from here; a text is never typed twice.
"""

from enum import StrEnum


class Mall(StrEnum):
    RAKUTEN = "rakuten"
    YAHOO = "yahoo"
    AMAZON = "amazon"


class Code(StrEnum):
    """What happened to one order of a restock request (the contract's rule table)."""

    NOT_REQUESTED = "not_requested"
    MALL_CANCEL_FAILED = "mall_cancel_failed"
    ALREADY_RESTORED = "already_restored"
    PREVIOUSLY_FAILED = "previously_failed"
    NO_SYNC_HISTORY = "no_sync_history"
    MALL_MISMATCH = "mall_mismatch"
    PRODUCT_NOT_FOUND = "product_not_found"
    RESTORED = "restored"


class SyncCode(StrEnum):
    """What happened to one execution of a sync-execution batch."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already_recorded"
    SKU_NOT_REGISTERED = "sku_not_registered"


class Outcome(StrEnum):
    SUCCESS = "success"
    SKIP = "skip"
    FAIL = "fail"


class RestockStatus(StrEnum):
    """The state of a recorded restock."""

    RESTORED = "restored"
    FAILED = "failed"
    RESOLVED = "resolved"


OUTCOME: dict[Code, Outcome] = {
    Code.NOT_REQUESTED: Outcome.SKIP,
    Code.MALL_CANCEL_FAILED: Outcome.SKIP,
    Code.ALREADY_RESTORED: Outcome.SKIP,
    Code.PREVIOUSLY_FAILED: Outcome.SKIP,
    Code.NO_SYNC_HISTORY: Outcome.SKIP,
    Code.MALL_MISMATCH: Outcome.FAIL,
    Code.PRODUCT_NOT_FOUND: Outcome.FAIL,
    Code.RESTORED: Outcome.SUCCESS,
}

MESSAGE: dict[Code, str] = {
    Code.RESTORED: "在庫戻し: 在庫を戻しました。",
    Code.ALREADY_RESTORED: "在庫戻し: 既に同期済み（または処理中）のためスキップしました。",
    Code.PREVIOUSLY_FAILED: (
        "在庫戻し: この注文の在庫戻しは以前に失敗しています。在庫連携で手動調整をお願いします。"
    ),
    Code.MALL_CANCEL_FAILED: (
        "在庫戻し: モールキャンセルに失敗したため、在庫戻しは実行されませんでした。"
    ),
    Code.NO_SYNC_HISTORY: (
        "在庫戻し: 在庫連携が実行されていない注文のため、在庫戻しは実行されませんでした。"
    ),
    Code.NOT_REQUESTED: "在庫戻し: 「在庫を戻す」がOFFのため、在庫戻しは実行されませんでした。",
    Code.MALL_MISMATCH: "注文のモールが在庫連携の実行履歴と一致しません",
    Code.PRODUCT_NOT_FOUND: "注文の商品は存在しません",
}

# The 在庫戻し lines of the 「キャンセル申請 実行結果」 screen (batch `messages`).
NO_SUCCEEDED_CANCEL = (
    "在庫戻し: モールキャンセルに成功した受注がないため、在庫戻しは実行されませんでした。"
)
FAILURES_HEADER = "在庫戻し: 以下の注文で失敗しました。在庫連携で手動調整をお願いします。"


def restored_count_line(count: int) -> str:
    """The batch line that counts the restored orders."""
    return f"在庫戻し: {count}件の注文で在庫を戻しました。"


def failure_line(order_no: str, message: str) -> str:
    """The batch line naming one failed order."""
    return f"{order_no}: {message}"


# Record code → status: which codes create a restock record, and in which state.
RECORDED_STATUS: dict[Code, RestockStatus] = {
    Code.RESTORED: RestockStatus.RESTORED,
    Code.MALL_MISMATCH: RestockStatus.FAILED,
    Code.PRODUCT_NOT_FOUND: RestockStatus.FAILED,
}
