"""API keys, the body limit, request ids and logs: the gate every request passes first."""

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr, ValidationError

from restock_service.access import ApiKeys, Role
from restock_service.api import create_app
from restock_service.config import Settings
from restock_service.messages import Code
from restock_service.tables import restocks, stock_movements
from tests.conftest import database_for, empty_tables
from tests.helpers import Database, cancel, count_rows, order, put_stock, quantity, rakuten, sync

WRITER, WRITER_NEXT, READER = "w-key-0123456789", "w-key-rotated-999", "r-key-abcdef"
KEYS = f"{WRITER}:writer,{WRITER_NEXT}:writer,{READER}:reader"
MIB = 1024 * 1024


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keyed(database_url: str) -> AsyncIterator[tuple[AsyncClient, Database]]:
    """A client of an app with keys configured; it sends no key unless told to."""
    app = create_app(Settings(database_url=database_url, api_keys=SecretStr(KEYS)))
    async with database_for(database_url) as db, app.router.lifespan_context(app):
        await empty_tables(db)
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c:
            yield c, db


def assert_problem(response: object, status: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    assert response.json()["status"] == status  # type: ignore[attr-defined]


def test_keys_parse_into_roles_and_match_in_constant_time() -> None:
    keys = ApiKeys.parse(KEYS)

    assert keys.role_of(WRITER) is Role.WRITER
    assert keys.role_of(WRITER_NEXT) is Role.WRITER
    assert keys.role_of(READER) is Role.READER
    assert keys.role_of(WRITER[:-1]) is None
    assert keys.role_of("") is None
    assert WRITER.encode() not in repr(keys).encode()


@pytest.mark.parametrize("raw", ["k1", "k1:admin", ":writer", "k1:writer,k2"])
def test_malformed_keys_setting_stops_the_service_at_start(raw: str) -> None:
    with pytest.raises(ValidationError):
        Settings(api_keys=SecretStr(raw))


def test_keys_setting_never_shows_its_keys() -> None:
    settings = Settings(api_keys=SecretStr(KEYS))

    assert WRITER not in repr(settings) and WRITER not in str(settings.model_dump())


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-key"),
        {"Authorization": f"Basic {WRITER}"},
        {"Authorization": WRITER},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "unknown", "basic", "no-scheme", "empty"],
)
async def test_calls_without_a_valid_key_get_401_with_a_bearer_challenge(
    keyed: tuple[AsyncClient, Database], headers: dict[str, str]
) -> None:
    client, _ = keyed

    for method, path in [("GET", "/stock/A"), ("POST", "/restocks"), ("GET", "/nowhere")]:
        response = await client.request(method, path, headers=headers, content=b"{broken")
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_writer_keys_may_do_everything_and_both_rotation_keys_work(
    keyed: tuple[AsyncClient, Database],
) -> None:
    client, _ = keyed

    r1 = await client.put("/stock/A", json={"quantity": 3}, headers=bearer(WRITER))
    r2 = await client.put("/stock/A", json={"quantity": 4}, headers=bearer(WRITER_NEXT))
    r3 = await client.get("/stock/A", headers=bearer(WRITER))
    r4 = await client.delete("/stock/A", headers=bearer(WRITER_NEXT))

    assert [r.status_code for r in (r1, r2, r3, r4)] == [200, 200, 200, 204]


async def test_reader_may_read_but_a_write_is_403_and_changes_nothing(
    keyed: tuple[AsyncClient, Database],
) -> None:
    client, db = keyed
    client.headers.update(bearer(WRITER))
    await put_stock(client, "A", 10)
    await sync(client, rakuten(1), {"A": 2})
    client.headers.update(bearer(READER))

    assert (await client.get("/stock/A")).status_code == 200
    assert (await client.get(f"/sync-executions/{rakuten(1)}")).status_code == 200
    for response in [
        await client.put("/stock/A", json={"quantity": 1}),
        await client.delete("/stock/A"),
        await cancel(client, [order(rakuten(1))]),
        await client.post("/sync-executions", json={}),
    ]:
        assert_problem(response, 403)

    assert await quantity(client, "A") == 8
    assert await count_rows(db, restocks) == 0


@pytest.mark.parametrize("path", ["/health", "/ready", "/openapi.json", "/docs"])
async def test_health_readiness_and_the_openapi_document_need_no_key(
    keyed: tuple[AsyncClient, Database], path: str
) -> None:
    client, _ = keyed

    assert (await client.get(path)).status_code == 200


def test_no_keys_configured_logs_one_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    create_app(Settings())

    warnings = [r for r in caplog.records if "WITHOUT authentication" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


async def test_keys_never_reach_the_logs(
    keyed: tuple[AsyncClient, Database], caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = keyed
    await client.get("/stock/A", headers=bearer(WRITER))
    await client.get("/stock/A", headers=bearer(WRITER + "x"))

    assert WRITER not in caplog.text


async def test_body_over_one_mib_is_413_before_parsing_and_changes_nothing(
    client: AsyncClient, db: Database
) -> None:
    await put_stock(client, "A", 1)
    too_big = b'{"quantity": 2' + b" " * MIB + b"}"

    declared = await client.put("/stock/A", content=too_big)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked framing
        for _ in range(17):
            yield b" " * (64 * 1024)

    streamed = await client.post("/restocks", content=chunks())

    assert_problem(declared, 413)
    assert_problem(streamed, 413)
    assert await quantity(client, "A") == 1
    assert await count_rows(db, stock_movements) == 1


async def test_body_of_exactly_one_mib_is_parsed(client: AsyncClient) -> None:
    body = b'{"quantity": 2}'
    body += b" " * (MIB - len(body))

    response = await client.put(
        "/stock/A", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text


async def test_request_id_is_echoed_or_made(client: AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "cancel-batch-42"})
    made = await client.get("/health")
    refused = await client.get("/health", headers={"X-Request-ID": "has spaces"})

    assert given.headers["x-request-id"] == "cancel-batch-42"
    assert len(made.headers["x-request-id"]) == 32
    assert refused.headers["x-request-id"] != "has spaces"


@pytest.fixture
def json_logs(database_url: str) -> Iterator[Settings]:
    yield Settings(database_url=database_url, log_format="json")


async def test_each_order_decision_is_one_json_log_line_with_its_requests_id(
    json_logs: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(json_logs)  # its log handler writes to the captured stderr
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client,
    ):
        async with database_for(json_logs.database_url) as db:
            await empty_tables(db)
        await put_stock(client, "A", 5)
        await sync(client, rakuten(1), {"A": 1})
        for request_id in ("req-777", "req-778"):
            await client.post(
                "/restocks",
                json={"mall": "rakuten", "restore_stock": True, "orders": [order(rakuten(1))]},
                headers={"X-Request-ID": request_id},
            )

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    decisions = [e for e in lines if e["message"].startswith("restock decision")]
    assert [{k: v for k, v in e.items() if k != "at"} for e in decisions] == [
        {
            "level": "INFO",
            "logger": "restock_service.restock",
            "message": (
                f"restock decision merchant=default order_no={rakuten(1)} mall=rakuten code={code}"
            ),
            "request_id": request_id,
            "merchant_id": "default",
            "order_no": rakuten(1),
            "mall": "rakuten",
            "code": code,
            "replayed": False,
        }
        for request_id, code in (("req-777", Code.RESTORED), ("req-778", Code.ALREADY_RESTORED))
    ]


async def test_body_that_is_not_utf8_is_422_naming_the_body(client: AsyncClient) -> None:
    response = await client.post(
        "/restocks", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 422)
    assert [e["field"] for e in response.json()["errors"]] == ["body"]


@pytest.mark.parametrize(
    "path",
    [
        "/stock/..%2F..%2Fetc%2Fpasswd",
        "/stock/%00",
        "/stock/%25",
        "/stock/" + "a" * 10_000,
        "/restocks/%2e%2e",
        "/stock/%E2%80%AE",
        "/stock/'%3B%20DROP%20TABLE%20stock%3B--",
        "/restocks/1'%20OR%20'1'%3D'1",
        "/sync-executions/%0d%0aX-Injected:%201",
    ],
)
async def test_path_tricks_get_a_4xx_never_a_5xx(client: AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert 400 <= response.status_code < 500
    assert "x-injected" not in response.headers


@pytest.mark.parametrize(
    "content",
    [b'{"quantity": 1e309}', b'{"quantity": 99999999999999999999999999999}', b"[" * 100_000],
    ids=["overflowing-float", "huge-integer", "deep-nesting"],
)
async def test_numbers_and_nesting_json_cannot_hold_are_422(
    client: AsyncClient, content: bytes
) -> None:
    response = await client.put(
        "/stock/A", content=content, headers={"Content-Type": "application/json"}
    )

    assert_problem(response, 422)


async def test_a_defect_answers_500_as_a_problem_with_the_request_id(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url))

    @app.get("/defect")
    async def defect() -> None:
        raise RuntimeError("a bug, not an input")

    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client,
    ):
        response = await client.get("/defect", headers={"X-Request-ID": "bug-1"})

    assert_problem(response, 500)
    assert response.headers["x-request-id"] == "bug-1"
    assert "a bug" not in response.text


def test_keys_setting_tolerates_spaces_around_entries() -> None:
    keys = ApiKeys.parse(f" {WRITER} : writer , {READER}:reader ")

    assert keys.role_of(WRITER) is Role.WRITER
    assert keys.role_of(READER) is Role.READER
