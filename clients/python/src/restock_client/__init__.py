"""restock-client: an async client for restock-service, with retries that take effect once.

Install with ``pip install ./clients/python``; then ``from restock_client import
RestockClient``. It needs httpx and tenacity, nothing of the server.
"""

from restock_client.client import RestockClient, parse_retry_after
from restock_client.errors import (
    RestockAuthError,
    RestockError,
    RestockRequestError,
    RestockResponseError,
    RestockUnavailable,
)
from restock_client.models import (
    Code,
    Counts,
    FieldError,
    Line,
    Mall,
    OrderCancel,
    OrderOutcome,
    Outcome,
    Resolution,
    RestockBatch,
    RestockRecord,
    RestockStatus,
    StockLevel,
)

__all__ = [
    "Code",
    "Counts",
    "FieldError",
    "Line",
    "Mall",
    "OrderCancel",
    "OrderOutcome",
    "Outcome",
    "Resolution",
    "RestockAuthError",
    "RestockBatch",
    "RestockClient",
    "RestockError",
    "RestockRecord",
    "RestockRequestError",
    "RestockResponseError",
    "RestockStatus",
    "RestockUnavailable",
    "StockLevel",
    "parse_retry_after",
]
