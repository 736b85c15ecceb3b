"""Every cursor, of the API and of the console, is read in one place (cursors.decode): a
forged position is refused there, and one that it lets through, however extreme, is one
that both databases can compare against."""

import base64
import json
from datetime import UTC, datetime

import pytest
from httpx import AsyncClient

from restock_service import cursors
from restock_service.api.console import FAILURES_CURSOR
from restock_service.console import text
from restock_service.errors import InvalidRequest
from restock_service.restock import LIST_CURSOR
from tests.helpers import cancel_ok, order, put_stock, rakuten, sync

# Moments whose UTC falls outside years 1 to 9999, although their local date is inside.
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]
# The first and the last moment that a cursor may hold.
EDGES = ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999+00:00"]


def forged(kind: str, *position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, *position]).encode()).decode().rstrip("=")


@pytest.mark.parametrize("moment", [*OUT_OF_RANGE, "2026-01-01T00:00:00", "yesterday", 20260101])
def test_a_moment_out_of_range_naive_or_not_a_moment_is_no_position(moment: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        cursors.decode(forged("k", moment, "x"), "k", (datetime, str), param="cursor")
    assert refused.value.problems[0].loc == ("cursor",)


def test_a_moment_comes_back_in_utc_as_it_went_out() -> None:
    at = datetime.fromisoformat("2026-05-25T19:00:00+09:00")
    token = cursors.encode("k", at, "x")
    assert cursors.decode(token, "k", (datetime, str), param="cursor") == (
        datetime(2026, 5, 25, 10, tzinfo=UTC),
        "x",
    )


async def _one_failure(client: AsyncClient) -> None:
    await put_stock(client, "GONE-1", 1)
    await sync(client, rakuten(1), {"GONE-1": 1})
    assert (await client.delete("/stock/GONE-1")).status_code == 204
    await cancel_ok(client, [order(rakuten(1))])


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_the_api_refuses_a_cursor_out_of_range_with_422(
    client: AsyncClient, moment: str
) -> None:
    response = await client.get("/restocks", params={"cursor": forged(LIST_CURSOR, moment, "x")})
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert (error["field"], error["location"]) == ("cursor", "query")


@pytest.mark.parametrize("moment", OUT_OF_RANGE)
async def test_the_console_refuses_a_cursor_out_of_range_with_its_own_page(
    client: AsyncClient, moment: str
) -> None:
    page = await client.get(
        "/console/failures", params={"cursor": forged(FAILURES_CURSOR, moment, "x")}
    )
    assert page.status_code == 400, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert text("bad_query") in page.text


@pytest.mark.parametrize("moment", EDGES)
async def test_a_cursor_at_either_edge_of_the_range_is_served_by_the_database(
    client: AsyncClient, moment: str
) -> None:
    await _one_failure(client)
    api = await client.get("/restocks", params={"cursor": forged(LIST_CURSOR, moment, "x")})
    assert api.status_code == 200, api.text
    # Oldest first: after the first moment comes the failure, after the last nothing.
    assert len(api.json()["items"]) == (1 if moment.startswith("0001") else 0)
    page = await client.get(
        "/console/failures", params={"cursor": forged(FAILURES_CURSOR, moment, "x")}
    )
    assert page.status_code == 200, page.text
    # Newest first: before the last moment comes the failure, before the first nothing.
    assert (rakuten(1) in page.text) is moment.startswith("9999")
