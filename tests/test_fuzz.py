"""A bounded schemathesis run against the served OpenAPI document, on PostgreSQL with keys.

It must find no 500 and no response that breaks the document's own schema; afterwards the
books must still balance.
"""

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from restock_service.api import create_app
from restock_service.books import check_books
from restock_service.config import Settings
from restock_service.engine import create_engine
from tests.conftest import migrated_pg_database
from tests.helpers import rakuten
from tests.servers import Server

pytestmark = pytest.mark.processes

KEY = "fuzz-writer-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed(pg_admin_dsn: str) -> Iterator[tuple[Server, str]]:
    """A served PostgreSQL-backed instance with keys configured, seeded so that calls hit."""
    with migrated_pg_database(pg_admin_dsn) as url:
        server = Server(url, RESTOCK_API_KEYS=f"{KEY}:writer")
        try:
            server.start()
            with httpx.Client(base_url=server.url, headers=AUTH) as http:
                for sku in ("A", "B", "0"):
                    http.put(f"/stock/{sku}", json={"quantity": 5}).raise_for_status()
                http.post(
                    "/sync-executions",
                    json={
                        "order_no": rakuten(1),
                        "mall": "rakuten",
                        "items": [{"sku": "A", "quantity": 1}],
                    },
                ).raise_for_status()
            yield server, url
        finally:
            server.close()


# The document the app serves at /openapi.json (test_cli_and_service proves they are equal).
# Loaded at import, as schemathesis's fixture-based loader does not run on this pytest.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_every_answer_fits_the_document(
    case: schemathesis.Case, fuzzed: tuple[Server, str]
) -> None:
    server, _ = fuzzed
    case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS)


async def test_books_balance_after_the_fuzzing(fuzzed: tuple[Server, str]) -> None:
    _, url = fuzzed
    engine = create_engine(Settings(database_url=url), pooled=False)
    try:
        async with engine.connect() as conn:
            report = await check_books(conn)
    finally:
        await engine.dispose()
    assert report.problems == ()
