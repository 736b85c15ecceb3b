"""A walk-through of one cancel batch, against the real service and the real database.

The demo registers stock, records the inventory sync's executions of four Rakuten orders,
and sends one mixed cancel batch through the HTTP API, in process. It then prints the
「キャンセル申請 実行結果」 screen as the merchant sees it, with the stock before and after.

Every run uses skus and order numbers of its own, so it can run again and again on the
same database. That database is one of its own (``./restock-demo.db``) unless told
otherwise, and it refuses one that holds anything but demo data unless told ``yes``: its
orders look real, and from the stock they would reach the feed that the inventory sync
pushes to the malls. The Japanese texts on the screen are the ones the service answered;
none is typed here.
"""

import asyncio
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from starlette.types import ASGIApp, Message

from restock_service import tables
from restock_service.access import Role
from restock_service.api import create_app
from restock_service.cli import DEFAULT_HOST, DEFAULT_PORT, console_url
from restock_service.config import Settings
from restock_service.engine import create_engine
from restock_service.faults import shown_url
from restock_service.messages import Code, Mall
from restock_service.migrations import migrate

DATABASE_URL = "sqlite+aiosqlite:///./restock-demo.db"
SKU_PREFIX = "DEMO-"

MALL = Mall.RAKUTEN
# What the mall answered for the order it refused to cancel: input to the service.
MALL_REFUSAL = (
    "現在のステータスが発送前キャンセル申請可能なステータスではないため、キャンセルができません。"
)
MALL_CANCEL_PREFIX = "モールキャンセル: "
TITLE = "キャンセル申請 実行結果"
TABLE_HEADER = "受注番号 | メッセージ"
REMOVED = "(removed)"

STOCK = {"TSHIRT-RED-M": 10, "CAP-01": 5, "MUG-02": 3}
REMOVED_SKU = "MUG-02"


@dataclass(frozen=True)
class Order:
    """One order of the batch: what the sync deducted, and what should become of it."""

    role: str
    lines: dict[str, int]
    expected: Code
    mall_cancel_succeeded: bool = True


ORDERS = (
    Order("cancelled at the mall", {"TSHIRT-RED-M": 2, "CAP-01": 1}, Code.RESTORED),
    Order("the mall refused the cancel", {"CAP-01": 1}, Code.MALL_CANCEL_FAILED, False),
    Order("already restocked once", {"TSHIRT-RED-M": 1}, Code.ALREADY_RESTORED),
    Order("its product was removed", {REMOVED_SKU: 1}, Code.PRODUCT_NOT_FOUND),
)
REPEATED = 2  # restocked alone first, so that the batch repeats it
FAILED = 3  # its product was removed: the failure to work off on the console
# Stock just before the batch → just after it (None: the sku is not registered).
EXPECTED_STOCK: dict[str, tuple[int | None, int | None]] = {
    "TSHIRT-RED-M": (8, 10),
    "CAP-01": (3, 4),
    REMOVED_SKU: (None, None),
}


class DemoError(Exception):
    """A step of the setup did not answer as the contract says."""


class NotADemoDatabase(Exception):
    """The database holds data that the demo did not write."""


@dataclass(frozen=True)
class Run:
    """The names of one run: its own skus and Rakuten order numbers."""

    label: str
    order_nos: tuple[str, ...]

    @classmethod
    def at(cls, epoch_ms: int) -> "Run":
        moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
        ms_of_day = epoch_ms % 86_400_000
        order_nos = tuple(
            f"354396-{moment:%Y%m%d}-{ms_of_day * 10 + i + 1:010d}" for i in range(len(ORDERS))
        )
        return cls(str(epoch_ms), order_nos)

    def sku(self, name: str) -> str:
        return f"{SKU_PREFIX}{self.label}-{name}"


def main_demo(
    settings: Settings, out: TextIO, *, yes: bool = False, port: int = DEFAULT_PORT
) -> int:
    """Check that the database holds demo data alone (unless ``yes``), migrate it, then run
    the demo; the exit code of ``run_demo``. Raises ``NotADemoDatabase``."""
    if not yes:
        found = asyncio.run(foreign_data(settings))
        if found:
            url = shown_url(settings.database_url)
            raise NotADemoDatabase(
                f"{url} holds data that is not the demo's ({', '.join(found)}); run the demo "
                "on a database of its own (the default), or pass --yes"
            )
    migrate(settings)
    return asyncio.run(run_demo(settings, out, port))


async def foreign_data(settings: Settings) -> list[str]:
    """What the database holds that no demo run wrote: tables that are not the service's,
    and rows that are not about demo skus or the orders of demo sync executions."""
    demo_orders = sa.select(tables.sync_execution_lines.c.order_no).where(
        tables.sync_execution_lines.c.sku.startswith(SKU_PREFIX, autoescape=True)
    )
    engine = create_engine(settings, pooled=False)
    found = []
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
            ours = {table.name for table in tables.metadata.sorted_tables}
            other = sorted(set(names) - ours - {"alembic_version"})
            if other:
                found.append(f"tables {', '.join(other)}")
            for table in tables.metadata.sorted_tables:
                if table.name not in names:
                    continue
                if table is tables.merchants:  # every deployment has `default`
                    foreign = table.c.merchant_id != tables.DEFAULT_MERCHANT
                elif "sku" in table.c:
                    foreign = ~table.c.sku.startswith(SKU_PREFIX, autoescape=True)
                elif "order_no" in table.c:
                    foreign = table.c.order_no.not_in(demo_orders)
                else:
                    foreign = sa.true()
                count = await conn.scalar(
                    sa.select(sa.func.count()).select_from(table).where(foreign)
                )
                if count:
                    found.append(f"{count} row(s) in {table.name}")
    finally:
        await engine.dispose()
    return found


async def run_demo(settings: Settings, out: TextIO, port: int = DEFAULT_PORT) -> int:
    """Run the demo on a migrated database; 0 when every order came out as expected. It
    ends with the command that serves this database on ``port``, and the console page
    of the failed order there."""
    app = create_app(settings)
    headers = _auth_headers(settings)
    if headers is None:
        print("demo: RESTOCK_API_KEYS has no writer key; the demo needs one.", file=out)
        return 1
    async with app.router.lifespan_context(app):
        client = InProcess(app, headers)
        try:
            return await _demo(client, settings, out, port)
        except DemoError as exc:
            print(f"demo failed: {exc}", file=out)
            return 1


@dataclass(frozen=True)
class Answer:
    """What the app answered one call."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class InProcess:
    """Calls the app in this process as an HTTP server would: one ASGI request per call,
    through every middleware and route, with no HTTP client library (serving needs none)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def request(self, method: str, path: str, json_body: Any = None) -> Answer:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        headers = [(b"host", b"demo"), (b"content-length", str(len(body)).encode())]
        if json_body is not None:
            headers.append((b"content-type", b"application/json"))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers + self.headers,
            "client": ("127.0.0.1", 0),
            "server": ("demo", 80),
        }
        status = 0
        chunks: list[bytes] = []
        answered = asyncio.Event()
        request_sent = False

        async def receive() -> Message:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()  # the client hangs up only once it has the whole answer
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            await self.app(scope, receive, send)
        finally:
            answered.set()
        return Answer(status, b"".join(chunks))


def serve_command(settings: Settings, port: int) -> str:
    """The shell command that serves the demo's database, as this process was started
    (``.venv/bin/restock-service`` under ``make demo``). A password in the URL shows as
    ``***``: the output may be pasted anywhere."""
    program = sys.argv[0] if Path(sys.argv[0]).name == "restock-service" else "restock-service"
    words = [program, "serve", "--host", DEFAULT_HOST, "--port", str(port)]
    url = shown_url(settings.database_url)
    return f"RESTOCK_DATABASE_URL={shlex.quote(url)} {shlex.join(words)}"


async def _demo(client: InProcess, settings: Settings, out: TextIO, port: int) -> int:
    run = await _fresh_run(client)
    url = shown_url(settings.database_url)
    print(f"restock-service demo: run {run.label} on {url}", file=out)
    print(file=out)

    for name, quantity in STOCK.items():
        await _call(client, "PUT", f"/stock/{run.sku(name)}", {"quantity": quantity}, 200)
        print(f"  PUT /stock/{run.sku(name)}  quantity {quantity}", file=out)
    for order_no, order in zip(run.order_nos, ORDERS, strict=True):
        items = [{"sku": run.sku(sku), "quantity": q} for sku, q in order.lines.items()]
        body = {"order_no": order_no, "mall": MALL.value, "items": items}
        await _call(client, "POST", "/sync-executions", body, 201)
        lines = ", ".join(f"{sku} x{q}" for sku, q in order.lines.items())
        print(f"  POST /sync-executions  {order_no}  {lines}  ({order.role})", file=out)

    repeated = run.order_nos[REPEATED]
    first = await _call(client, "POST", "/restocks", _batch([_order(repeated)]), 200)
    print(f"  POST /restocks  {repeated} alone first: {first['results'][0]['code']}", file=out)
    await _call(client, "DELETE", f"/stock/{run.sku(REMOVED_SKU)}", None, 204)
    print(f"  DELETE /stock/{run.sku(REMOVED_SKU)}  (removed from the inventory sync)", file=out)

    before = {name: await _quantity(client, run.sku(name)) for name in STOCK}
    orders = [
        _order(order_no, order.mall_cancel_succeeded)
        for order_no, order in zip(run.order_nos, ORDERS, strict=True)
    ]
    answer = await _call(client, "POST", "/restocks", _batch(orders), 200)
    print(f"  POST /restocks  {len(orders)} orders, restore_stock true", file=out)
    after = {name: await _quantity(client, run.sku(name)) for name in STOCK}

    print(file=out)
    _print_screen(answer, orders, out)
    print(file=out)
    print("在庫 (before → after the cancel batch)", file=out)
    width = max(len(run.sku(name)) for name in STOCK) + 1
    for name in STOCK:
        shown = f"{_shown(before[name])} → {_shown(after[name])}"
        print(f"  {run.sku(name) + ':':<{width}} {shown}", file=out)

    differences = _differences(run, answer, before, after)
    print(file=out)
    if differences:
        print("NOT as expected:", file=out)
        for line in differences:
            print(f"  {line}", file=out)
        return 1
    print("As expected: " + ", ".join(o.expected for o in ORDERS), file=out)
    failed = run.order_nos[FAILED]
    print(file=out)
    print(f"Work off the failed order {failed} on the console. Serve this database:", file=out)
    print(f"  {serve_command(settings, port)}", file=out)
    print("then open:", file=out)
    print(f"  {console_url(DEFAULT_HOST, port)}/orders/{failed}", file=out)
    return 0


def _print_screen(answer: dict[str, Any], orders: list[dict[str, Any]], out: TextIO) -> None:
    """The 「キャンセル申請 実行結果」 screen: a row per order, then the 在庫戻し lines."""
    print(f"{TITLE} ({str(answer['mall']).capitalize()})", file=out)
    print(file=out)
    print(TABLE_HEADER, file=out)
    results = {r["order_no"]: r for r in answer["results"]}
    for sent in orders:
        if sent["mall_cancel_succeeded"]:
            message = results[sent["order_no"]]["message"]
        else:
            message = MALL_CANCEL_PREFIX + sent["mall_cancel_message"]
        print(f"{sent['order_no']} | {message}", file=out)
    print(file=out)
    for line in answer["messages"]:
        print(line, file=out)


def _differences(
    run: Run,
    answer: dict[str, Any],
    before: dict[str, int | None],
    after: dict[str, int | None],
) -> list[str]:
    found = [r["order_no"] for r in answer["results"]]
    if found != list(run.order_nos):
        return [f"results are for {found}, not for {list(run.order_nos)}"]
    differences = [
        f"{order_no}: expected {order.expected}, got {result['code']}"
        for order_no, order, result in zip(run.order_nos, ORDERS, answer["results"], strict=True)
        if result["code"] != order.expected
    ]
    for name, (expected_before, expected_after) in EXPECTED_STOCK.items():
        if (before[name], after[name]) != (expected_before, expected_after):
            differences.append(
                f"{run.sku(name)}: expected {_shown(expected_before)} → {_shown(expected_after)}, "
                f"got {_shown(before[name])} → {_shown(after[name])}"
            )
    return differences


async def _fresh_run(client: InProcess) -> Run:
    """Names no earlier run on this database has used."""
    epoch_ms = time.time_ns() // 1_000_000
    for _ in range(1000):
        run = Run.at(epoch_ms)
        taken = [await _exists(client, f"/stock/{run.sku(name)}") for name in STOCK]
        taken += [await _exists(client, f"/sync-executions/{n}") for n in run.order_nos]
        if not any(taken):
            return run
        epoch_ms += 1
    raise DemoError("could not find unused demo skus and order numbers")


async def _exists(client: InProcess, path: str) -> bool:
    response = await client.get(path)
    if response.status_code not in (200, 404):
        raise DemoError(f"GET {path} answered {response.status_code}: {response.text}")
    return response.status_code == 200


async def _quantity(client: InProcess, sku: str) -> int | None:
    response = await client.get(f"/stock/{sku}")
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise DemoError(f"GET /stock/{sku} answered {response.status_code}: {response.text}")
    quantity: int = response.json()["quantity"]
    return quantity


async def _call(
    client: InProcess, method: str, path: str, body: Any, expected: int
) -> dict[str, Any]:
    response = await client.request(method, path, body)
    if response.status_code != expected:
        raise DemoError(
            f"{method} {path} answered {response.status_code}, not {expected}: {response.text}"
        )
    answer: dict[str, Any] = response.json() if response.content else {}
    return answer


def _batch(orders: list[dict[str, Any]]) -> dict[str, Any]:
    return {"mall": MALL.value, "restore_stock": True, "orders": orders}


def _order(order_no: str, mall_cancel_succeeded: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"order_no": order_no, "mall_cancel_succeeded": mall_cancel_succeeded}
    if not mall_cancel_succeeded:
        entry["mall_cancel_message"] = MALL_REFUSAL
    return entry


def _shown(quantity: int | None) -> str:
    return REMOVED if quantity is None else str(quantity)


def _auth_headers(settings: Settings) -> dict[str, str] | None:
    """No header when the service runs without keys; a writer key's header when it has keys."""
    if not settings.keys().enabled:
        return {}
    for item in settings.api_keys.get_secret_value().split(","):
        key, _, role = item.strip().rpartition(":")
        if key and role == Role.WRITER:
            return {"Authorization": f"Bearer {key}"}
    return None
