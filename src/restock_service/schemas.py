"""Request and response bodies (pydantic). Requests reject unknown fields and loose types."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic_core import PydanticCustomError

from restock_service.access import KEY_NAME_LENGTH, key_name_problem
from restock_service.messages import Code, Mall, Outcome, RestockStatus, SyncCode
from restock_service.rules import BatchResult, Line, SyncDecision

ORDER_NO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Visible ASCII except / ? # % (they would break the sku's place in a URL path).
SKU_PATTERN = r"^[\x21\x22\x24\x26-\x2E\x30-\x3E\x40-\x7E]{1,64}$"

OrderNo = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=64,
        pattern=ORDER_NO_PATTERN,
        description="The mall's order number.",
        examples=["354396-20260525-0036329794"],
    ),
]
Sku = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=64,
        pattern=SKU_PATTERN,
        description="Inventory-sync product code: visible ASCII except / ? # %.",
        examples=["TSHIRT-RED-M"],
    ),
]


def _text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string with an offset")
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None


Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only), AfterValidator(_in_utc)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StockPut(Request):
    quantity: Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]


class LineIn(Request):
    sku: Sku
    quantity: Annotated[StrictInt, Field(ge=1, le=100_000)]


class SyncExecutionIn(Request):
    order_no: OrderNo
    mall: Mall
    items: Annotated[list[LineIn], Field(min_length=1, max_length=500)]
    executed_at: Timestamp | None = Field(default=None, description="Default: now.")


class SyncBatchIn(Request):
    executions: Annotated[list[SyncExecutionIn], Field(min_length=1, max_length=1000)]


class RestockOrderIn(Request):
    order_no: OrderNo
    mall_cancel_succeeded: StrictBool
    mall_cancel_message: Annotated[StrictStr, Field(max_length=1000)] | None = None


# Free text that PostgreSQL can store (no NUL characters).
Text = Annotated[StrictStr, Field(pattern=r"^[^\x00]*$")]


class ResolutionIn(Request):
    note: Annotated[Text, Field(min_length=1, max_length=1000)]
    resolved_by: Annotated[Text, Field(min_length=1, max_length=100)]


class AdjustmentIn(Request):
    delta: Annotated[
        StrictInt,
        Field(ge=-1_000_000_000, le=1_000_000_000, description="Non-zero change of quantity."),
    ]
    reason: Annotated[Text, Field(min_length=1, max_length=200)]
    order_no: OrderNo | None = None

    @field_validator("delta")
    @classmethod
    def _non_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class RestockRequest(Request):
    mall: Mall
    restore_stock: StrictBool = Field(description="The 「在庫を戻す」 checkbox.")
    orders: Annotated[list[RestockOrderIn], Field(min_length=1, max_length=1000)]


# --- responses ------------------------------------------------------------------------


class LineOut(BaseModel):
    sku: str
    quantity: int

    @classmethod
    def many(cls, lines: tuple[Line, ...]) -> list["LineOut"]:
        return [cls(sku=line.sku, quantity=line.quantity) for line in lines]


class StockOut(BaseModel):
    sku: str
    quantity: int
    updated_at: datetime


class SyncExecutionOut(BaseModel):
    order_no: str
    mall: Mall
    items: list[LineOut]
    executed_at: datetime
    recorded_at: datetime


class RestockResultOut(BaseModel):
    order_no: str
    code: Code
    outcome: Outcome
    message: str
    items: list[LineOut]
    missing_skus: list[str]


class Counts(BaseModel):
    success: int
    skip: int
    fail: int


class RestockBatchOut(BaseModel):
    mall: Mall
    counts: Counts
    results: list[RestockResultOut]
    messages: list[str]

    @classmethod
    def of(cls, batch: BatchResult) -> "RestockBatchOut":
        return cls(
            mall=batch.mall,
            counts=Counts(
                success=batch.count(Outcome.SUCCESS),
                skip=batch.count(Outcome.SKIP),
                fail=batch.count(Outcome.FAIL),
            ),
            results=[
                RestockResultOut(
                    order_no=r.order_no,
                    code=r.decision.code,
                    outcome=r.decision.outcome,
                    message=r.decision.message,
                    items=LineOut.many(r.decision.items),
                    missing_skus=list(r.decision.missing_skus),
                )
                for r in batch.results
            ],
            messages=list(batch.messages),
        )


class SyncResultOut(BaseModel):
    order_no: str
    code: SyncCode
    missing_skus: list[str] = Field(description="The unregistered skus, in item order.")


class SyncCounts(BaseModel):
    recorded: int
    already_recorded: int
    sku_not_registered: int


class SyncBatchOut(BaseModel):
    counts: SyncCounts
    results: list[SyncResultOut] = Field(description="In request order.")

    @classmethod
    def of(cls, decisions: list[SyncDecision]) -> "SyncBatchOut":
        counts = {code.value: 0 for code in SyncCode}
        for decision in decisions:
            counts[decision.code.value] += 1
        return cls(
            counts=SyncCounts(**counts),
            results=[
                SyncResultOut(order_no=d.order_no, code=d.code, missing_skus=list(d.missing_skus))
                for d in decisions
            ],
        )


class Resolution(BaseModel):
    note: str
    resolved_by: str
    resolved_at: datetime
    actor: str | None = Field(
        default=None, description="The name of the API key that resolved it (v1.2)."
    )


class RestockRecordOut(BaseModel):
    order_no: str
    mall: Mall
    status: RestockStatus
    code: Code
    message: str
    items: list[LineOut]
    missing_skus: list[str]
    requested_at: datetime
    completed_at: datetime
    repeat_requests: int
    resolution: Resolution | None = Field(
        default=None, description="How a failed restock was settled by hand."
    )


class RestockPage(BaseModel):
    items: list[RestockRecordOut]
    next_cursor: str | None


class MovementOut(BaseModel):
    id: int
    sku: str
    delta: int
    quantity_after: int
    reason: str = Field(description="set, sync_execution, restock, adjustment or delete.")
    order_no: str | None
    at: datetime
    note: str | None = Field(description="An adjustment's reason; null otherwise.")
    actor: str | None = Field(
        description="The name of the API key that made it; null without keys, and on rows "
        "older than actors."
    )


class MovementPage(BaseModel):
    items: list[MovementOut]
    next_cursor: str | None


class StockChange(BaseModel):
    sku: str
    quantity: int = Field(description="The current quantity; 0 for a removed sku.")
    deleted: bool
    changed_at: datetime


class StockChangesPage(BaseModel):
    items: list[StockChange]
    next_cursor: str = Field(description="Pass as `after` next time.")


class ProblemField(BaseModel):
    field: str = Field(description="Where the offending value is, like orders[1].order_no.")
    location: str = Field(description="body, path, query or header.")
    message: str
    type: str
    input: Any = None


class Problem(BaseModel):
    """An RFC 9457 problem document, the body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemField] | None = None


# --- merchants (contract v1.3) -------------------------------------------------------------


class MerchantIn(Request):
    name: Annotated[Text, Field(min_length=1, max_length=100)]


class MerchantOut(BaseModel):
    merchant_id: str
    name: str
    created_at: datetime


class MerchantPage(BaseModel):
    items: list[MerchantOut]
    next_cursor: str | None


def _key_name(value: str) -> str:
    problem = key_name_problem(value, platform=False)
    if problem is not None:
        raise PydanticCustomError("key_name", problem)
    return value


class KeyIn(Request):
    """A merchant key to make."""

    name: Annotated[
        StrictStr,
        Field(min_length=1, max_length=KEY_NAME_LENGTH, description="Unique at the merchant."),
        AfterValidator(_key_name),
    ]
    role: Literal["writer", "reader"]


class KeyOut(BaseModel):
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None = Field(
        description="Noted at most once a minute, so up to a minute behind."
    )


class KeyMadeOut(BaseModel):
    merchant_id: str
    name: str
    role: str
    key: str | None = Field(
        description="The key, shown this once; null in a replay (Idempotency-Replayed), "
        "since it is kept only as a digest."
    )
    created_at: datetime


class KeyList(BaseModel):
    items: list[KeyOut]
