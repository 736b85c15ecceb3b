"""The PostgreSQL statements as the store sends them: every write can take an idempotency key,
and a receipt reads back as the rows asyncpg returned. (The keyed statements themselves run
against PostgreSQL in test_idempotency.py and test_idempotency_processes.py.)"""

import re
from datetime import UTC, datetime

import pytest

from restock_service.store.receipts import Receipt, head_of
from restock_service.store.statements import GATE, SENT_DIR, SQL_DIR, sent, statement

# Writes that are no API request's effect: the keys' own housekeeping, and the console's
# sign-outs (a console session, not an API write).
# Writes no request asks for: the deployment's housekeeping, and noting a key's last use.
HOUSEKEEPING = {"key_purge", "key_forget", "sign_out", "sign_out_purge", "api_key_find"}
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE)\b")


def _code(name: str) -> str:
    """The file without its comments."""
    lines = (SQL_DIR / f"{name}.sql").read_text().split("\n")
    return "\n".join(line.split("--")[0] for line in lines)


STATEMENTS = sorted(p.stem for p in SQL_DIR.glob("*.sql") if p.stem != "move_stock")


@pytest.mark.parametrize("name", STATEMENTS)
def test_every_statement_that_writes_for_a_request_runs_keyed(name: str) -> None:
    writes = (
        bool(_WRITES.search(_code(name)))
        or "-- include: move_stock.sql" in (SQL_DIR / f"{name}.sql").read_text()
    )
    if name in HOUSEKEEPING or not writes:
        assert not statement(name).writes
        with pytest.raises(ValueError, match="only a write statement"):
            statement(name, keyed=True)
        return
    unkeyed, keyed = statement(name), statement(name, keyed=True)
    assert unkeyed.writes and keyed.writes
    assert GATE in (SQL_DIR / f"{name}.sql").read_text()  # its writes check the key first
    assert GATE not in unkeyed.text and GATE not in keyed.text
    assert "key_gate" not in unkeyed.text and "idempotency_keys" not in unkeyed.text
    assert "idempotency_key_held_if" in keyed.text and "INSERT INTO idempotency_keys" in keyed.text
    assert set(unkeyed.names) <= set(keyed.names)
    # The key's merchant is the statement's own on a merchant's data; a platform statement
    # (merchants, keys) keeps its key at the merchant of the call, the platform's.
    assert set(keyed.names) - set(unkeyed.names) - {"merchant"} == {
        "key_owner",
        "key",
        "key_fingerprint",
        "key_expires_at",
        "key_receipt_head",
    }
    assert "merchant" in keyed.names


def test_a_receipt_reads_back_as_the_rows_were_returned() -> None:
    at = datetime(2026, 12, 2, 8, 0, 0, 123456, tzinfo=UTC)
    earlier = [[{"order_no": "o1", "quantity": 2, "registered": True}]]
    own = '[{"sku": "A", "quantity": 15, "updated_at": "2026-12-02T08:00:00.123456+00:00"}]'
    receipt = Receipt((head_of(earlier) + own + "]").encode())

    (first,) = receipt.rows(0, [("order_no", "text"), ("quantity", "int4"), ("registered", "bool")])
    (second,) = receipt.rows(
        1, [("sku", "text"), ("quantity", "int8"), ("updated_at", "timestamptz")]
    )

    assert (first["order_no"], first[1], first["registered"]) == ("o1", 2, True)
    sku, quantity, updated_at = second
    assert (sku, quantity, updated_at) == ("A", 15, at)
    assert dict(second) == {"sku": "A", "quantity": 15, "updated_at": at}
    assert (lambda **row: row)(**second) == dict(second)


def test_a_receipt_keeps_a_text_that_looks_like_a_time_as_text() -> None:
    receipt = Receipt(b'[[{"note": "2026-12-02T08:00:00+00:00"}]]')
    (row,) = receipt.rows(0, [("note", "text")])
    assert row["note"] == "2026-12-02T08:00:00+00:00"


def test_what_each_statement_sends_is_written_out_for_review_and_current() -> None:
    on_disk = {path.name: path.read_text() for path in SENT_DIR.glob("*.sql")}
    assert on_disk.keys() == sent().keys(), "run `make sql`"
    stale = [file for file, text in sent().items() if on_disk[file] != text]
    assert stale == [], f"run `make sql`: {stale} differ from what is sent"
