"""The demo: the 「キャンセル申請 実行結果」 screen of one mixed batch, run twice."""

import io
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from restock_service.config import Settings
from restock_service.console import TEXT
from restock_service.demo import NotADemoDatabase, main_demo, run_demo, serve_command
from restock_service.messages import (
    FAILURES_HEADER,
    MESSAGE,
    Code,
    failure_line,
    restored_count_line,
)
from restock_service.migrations import migrate
from tests.servers import free_port

pytestmark = pytest.mark.processes

MALL_REFUSAL = (
    "現在のステータスが発送前キャンセル申請可能なステータスではないため、キャンセルができません。"
)


def _screen(printed: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The table rows (order_no, message) and the 在庫戻し lines of the printed screen."""
    lines = printed.splitlines()
    start = lines.index("受注番号 | メッセージ") + 1
    end = lines.index("", start)
    rows = [tuple(line.split(" | ", 1)) for line in lines[start:end]]
    batch_end = lines.index("", end + 1)
    return [(order_no, message) for order_no, message in rows], lines[end + 1 : batch_end]


def test_demo_prints_the_merchants_screen_and_runs_again_on_the_same_database(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    seen_orders: set[str] = set()
    for _ in range(2):
        out = io.StringIO()
        assert main_demo(settings, out) == 0, out.getvalue()
        printed = out.getvalue()

        assert "キャンセル申請 実行結果 (Rakuten)" in printed.splitlines()
        rows, batch_lines = _screen(printed)
        assert [message for _, message in rows] == [
            MESSAGE[Code.RESTORED],
            "モールキャンセル: " + MALL_REFUSAL,
            MESSAGE[Code.ALREADY_RESTORED],
            MESSAGE[Code.PRODUCT_NOT_FOUND],
        ]
        removed_order = rows[3][0]
        assert batch_lines == [
            restored_count_line(1),
            MESSAGE[Code.ALREADY_RESTORED],
            FAILURES_HEADER,
            failure_line(removed_order, MESSAGE[Code.PRODUCT_NOT_FOUND]),
        ]
        assert "TSHIRT-RED-M: 8 → 10" in printed
        # It ends where the failure is worked off: the order's page on the console, which
        # the command before it serves.
        *_, command, _, page = printed.splitlines()
        assert page.strip() == f"http://127.0.0.1:8000/console/orders/{removed_order}"
        assert command.strip() == serve_command(settings, 8000)
        assert "NOT as expected" not in printed

        order_nos = {order_no for order_no, _ in rows}
        assert len(order_nos) == 4
        assert not order_nos & seen_orders, "a second run must use order numbers of its own"
        seen_orders |= order_nos


async def test_demo_reports_failure_on_a_database_without_schema(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}", db_deadline_s=0.5
    )
    out = io.StringIO()
    assert await run_demo(settings, out) == 1
    assert out.getvalue().startswith("demo failed: ")


def test_demo_refuses_a_database_with_data_of_its_own_unless_told_yes(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    migrate(settings)
    with sqlite3.connect(tmp_path / "shop.db") as conn:
        conn.execute(
            "INSERT INTO stock (merchant_id, sku, quantity, created_at, updated_at) VALUES "
            "('default', 'CAP-01', 5, '2026-05-25 00:00:00', '2026-05-25 00:00:00')"
        )

    with pytest.raises(NotADemoDatabase, match=r"1 row\(s\) in stock"):
        main_demo(settings, io.StringIO())

    out = io.StringIO()
    assert main_demo(settings, out, yes=True) == 0, out.getvalue()


def test_make_demo_ends_with_a_command_that_serves_the_page_it_prints(tmp_path: Path) -> None:
    """As `make demo` runs it, from the console script; then the printed command, word for
    word, in the same directory, and the printed page."""
    program = str(Path(sys.executable).parent / "restock-service")
    env = {k: v for k, v in os.environ.items() if k != "RESTOCK_DATABASE_URL"}
    port = free_port()
    demo = subprocess.run(
        [program, "demo", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    *_, command, _, page = demo.stdout.splitlines()

    # As pasted into a shell; in a session of its own, to stop the shell and the server.
    server = subprocess.Popen(
        ["sh", "-c", command.strip()],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stderr is not None
        for line in server.stderr:  # uvicorn says so once it listens
            if "Uvicorn running on" in line:
                break
        response = httpx.get(page.strip(), timeout=10)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)

    order_no = page.rsplit("/", 1)[1]
    assert response.status_code == 200, response.text
    assert TEXT["not_found_order"] not in response.text
    assert order_no in response.text
    assert MESSAGE[Code.PRODUCT_NOT_FOUND] in response.text
