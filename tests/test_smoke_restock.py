from httpx import AsyncClient

from restock_service.messages import MESSAGE, Code, restored_count_line
from tests.helpers import Database, cancel_ok, ledger, order, put_stock, quantities, rakuten, sync


async def test_cancel_with_restore_adds_the_snapshot_back_once(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "TSHIRT-RED-M", 10)
    await put_stock(client, "CAP-01", 5)
    await sync(client, rakuten(1), {"TSHIRT-RED-M": 2, "CAP-01": 1})
    assert await quantities(client, "TSHIRT-RED-M", "CAP-01") == {"TSHIRT-RED-M": 8, "CAP-01": 4}

    body = await cancel_ok(client, [order(rakuten(1))])

    assert body["results"][0]["code"] == Code.RESTORED
    assert body["results"][0]["message"] == MESSAGE[Code.RESTORED]
    assert body["messages"] == [restored_count_line(1)]
    assert await quantities(client, "TSHIRT-RED-M", "CAP-01") == {"TSHIRT-RED-M": 10, "CAP-01": 5}
    assert await ledger(db, "restock") == [
        ("TSHIRT-RED-M", 2, rakuten(1)),
        ("CAP-01", 1, rakuten(1)),
    ]
