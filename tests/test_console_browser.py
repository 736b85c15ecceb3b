"""The operations console in a real browser: Debian's chromium, driven by Playwright, against
a real `restock-service serve` process with a writer's and a reader's key.

It walks what a person does (sign in, open the failure, adjust the missing sku, resolve it,
see it leave the list, see the adjustment and its actor on the sku's page; a form sent
twice applies once; a link makes no notice), with JavaScript off, and saves a screenshot
of each main page at 1280×800 and at a phone's width.

Outside CI, without Playwright or /usr/bin/chromium these tests skip with the reason; with
CI=true that is a failure (.ci/run installs chromium first).
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from restock_service.console import DEFAULT_ADJUSTMENT_REASON, text
from restock_service.messages import MESSAGE, Code
from tests.conftest import IN_CI
from tests.helpers import rakuten
from tests.servers import Server

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "output" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

WRITER_KEY = "w-browser-key-0123456789"
READER_KEY = "r-browser-key-0123456789"
KEYS = json.dumps(
    [
        {"name": "yamada", "key": WRITER_KEY, "role": "writer"},
        {"name": "suzuki", "key": READER_KEY, "role": "reader"},
    ]
)
FAILED = rakuten(1001)  # worked off by the writer
OTHER = rakuten(1002)  # left for the reader and the forged posts


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"Playwright for Python is not installed ({exc}); `make install` installs it"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing; `apt-get install chromium fonts-noto-cjk` installs it"
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    problem = _browser_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true needs the browser tests to run: {problem}", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server with a writer's and a reader's key, and two failed restocks in it."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('browser') / 'restock.db'}"
    # `--migrate`: the server migrates its database (Playwright's loop runs in this thread).
    process = Server(url, "--migrate", RESTOCK_API_KEYS=KEYS)
    try:
        process.start()
        with _api(process.url) as api:
            for order_no, sku in ((FAILED, "GONE-1"), (OTHER, "GONE-2")):
                _failed_restock(api, order_no, sku)
        yield process.url
    finally:
        process.close()


def _api(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {WRITER_KEY}"})


def _call(api: httpx.Client, method: str, path: str, status: int, body: Any = None) -> Any:
    response = api.request(method, path, json=body)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _failed_restock(api: httpx.Client, order_no: str, gone: str) -> None:
    """PUT stock, record the sync, remove one sku, cancel: product_not_found. Then the
    merchant registers the product again (at 0), so that it can be adjusted."""
    _call(api, "PUT", "/stock/KEEP-1", 200, {"quantity": 10})
    _call(api, "PUT", f"/stock/{gone}", 200, {"quantity": 5})
    execution = {
        "order_no": order_no,
        "mall": "rakuten",
        "items": [{"sku": "KEEP-1", "quantity": 2}, {"sku": gone, "quantity": 1}],
        "executed_at": "2026-05-25T10:00:00+09:00",
    }
    _call(api, "POST", "/sync-executions", 201, execution)
    _call(api, "DELETE", f"/stock/{gone}", 204)
    cancel = {
        "mall": "rakuten",
        "restore_stock": True,
        "orders": [{"order_no": order_no, "mall_cancel_succeeded": True}],
    }
    answer = _call(api, "POST", "/restocks", 200, cancel)
    assert answer["results"][0]["code"] == Code.PRODUCT_NOT_FOUND
    _call(api, "PUT", f"/stock/{gone}", 200, {"quantity": 0})


def _quantity(base_url: str, sku: str) -> int:
    with _api(base_url) as api:
        quantity: int = _call(api, "GET", f"/stock/{sku}", 200)["quantity"]
        return quantity


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")


class Visit:
    """A browser context (one person's browser, JavaScript off) on the console."""

    def __init__(self, chromium: Any, base_url: str, viewport: dict[str, int]) -> None:
        self.base_url = base_url
        self.context = chromium.new_context(
            base_url=base_url, viewport=viewport, java_script_enabled=False, locale="ja-JP"
        )
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.elsewhere: list[str] = []
        self.page.on("request", self._note)
        self.width = viewport["width"]

    def _note(self, request: Any) -> None:
        if not request.url.startswith(self.base_url + "/"):
            self.elsewhere.append(request.url)

    def sign_in(self, key: str) -> None:
        self.page.goto("/console")
        assert self.page.url.endswith("/console/login")
        self.page.fill("#api_key", key)
        self.page.click("button:has-text('ログイン')")
        assert self.page.url.endswith("/console"), self.page.url

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{self.width}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        assert self.elsewhere == [], f"loaded from outside the service: {self.elsewhere}"
        self.context.close()


@pytest.fixture
def desktop(chromium: Any, server: str) -> Iterator[Visit]:
    visit = Visit(chromium, server, DESKTOP)
    yield visit
    visit.close()


def test_a_writer_works_off_a_failed_restock(desktop: Visit, server: str) -> None:
    page = desktop.page
    page.goto("/console")
    assert page.url.endswith("/console/login")
    assert page.locator("html").get_attribute("lang") == "ja"
    desktop.shot("login")
    desktop.sign_in(WRITER_KEY)
    assert page.locator(".who-name").inner_text() == "yamada"
    desktop.shot("home")

    page.click("nav >> text=未対応の失敗")
    assert page.url.endswith("/console/failures")
    desktop.shot("failures")
    page.click(f"text={FAILED}")
    assert page.url.endswith(f"/console/orders/{FAILED}")
    assert page.get_by_text(MESSAGE[Code.PRODUCT_NOT_FOUND]).first.is_visible()
    assert page.get_by_text("2026-05-25 10:00:00 +09:00").first.is_visible()
    desktop.shot("order")

    form = page.locator("form.adjust", has=page.locator("input[name=sku][value='GONE-1']"))
    assert form.locator("input[name=delta]").input_value() == "1"
    assert form.locator("input[name=order_no]").input_value() == FAILED
    assert form.locator("input[name=reason]").input_value() == DEFAULT_ADJUSTMENT_REASON
    form.locator("button[type=submit]").click()
    notice = text("adjusted", sku="GONE-1", delta=1, quantity=1)
    assert page.locator(".notice").inner_text() == notice
    assert _quantity(server, "GONE-1") == 1
    desktop.shot("order-adjusted")
    page.reload()  # a notice is told once
    assert page.locator(".notice").count() == 0

    page.fill("#note", "在庫連携で GONE-1 を手動で加算しました。")
    assert page.locator("#resolved_by").input_value() == "yamada"
    page.click("button:has-text('対応済みにする')")
    assert page.locator(".notice").inner_text() == text("resolved")
    assert page.locator(".status-resolved").first.is_visible()
    assert page.locator("form.adjust").count() == 0

    page.click("nav >> text=未対応の失敗")
    assert page.get_by_text(FAILED).count() == 0
    assert page.get_by_text(OTHER).count() == 1

    page.goto("/console/skus/GONE-1")
    row = page.locator("tr", has=page.locator("td", has_text="手動調整"))
    assert row.count() == 1
    assert "yamada" in row.inner_text()
    assert "+1" in row.inner_text()
    assert FAILED in row.inner_text()
    desktop.shot("sku")


def test_every_main_page_fits_a_phone(chromium: Any, server: str) -> None:
    phone = Visit(chromium, server, PHONE)
    try:
        page = phone.page
        page.goto("/console")
        phone.shot("login")
        phone.sign_in(WRITER_KEY)
        for name, path in [
            ("home", "/console"),
            ("failures", "/console/failures"),
            ("order", f"/console/orders/{OTHER}"),
            ("sku", "/console/skus/KEEP-1"),
        ]:
            page.goto(path)
            # A full-page screenshot is as wide as the page: nothing sticks out sideways.
            assert _png_width(phone.shot(name)) == PHONE["width"], name
    finally:
        phone.close()


def test_a_reader_sees_the_failure_but_cannot_change_it(chromium: Any, server: str) -> None:
    reader = Visit(chromium, server, DESKTOP)
    try:
        reader.sign_in(READER_KEY)
        page = reader.page
        assert page.locator(".who").inner_text().startswith("suzuki")
        page.goto(f"/console/orders/{OTHER}")
        assert page.get_by_text(MESSAGE[Code.PRODUCT_NOT_FOUND]).first.is_visible()
        assert page.locator("form.adjust").count() == 0
        assert page.locator("#note").count() == 0
        reader.shot("order-reader")
        page.goto("/console/skus/KEEP-1")
        assert page.locator("#delta").count() == 0

        # A forged post, with this session's genuine token (the sign-out form's): 403.
        token = page.locator("input[name=csrf_token]").first.input_value()
        before = _quantity(server, "KEEP-1")
        answer = reader.context.request.post(
            f"{server}/console/skus/KEEP-1",
            form={"delta": "5", "reason": "forged", "csrf_token": token},
            max_redirects=0,
        )
        assert answer.status == 403
        answer = reader.context.request.post(
            f"{server}/console/orders/{OTHER}",
            form={"note": "forged", "csrf_token": token},
            max_redirects=0,
        )
        assert answer.status == 403
        assert _quantity(server, "KEEP-1") == before
        with _api(server) as api:
            assert _call(api, "GET", f"/restocks/{OTHER}", 200)["status"] == "failed"
    finally:
        reader.close()


def test_a_post_without_the_csrf_token_is_refused(desktop: Visit, server: str) -> None:
    desktop.sign_in(WRITER_KEY)
    before = _quantity(server, "KEEP-1")
    answer = desktop.context.request.post(
        f"{server}/console/skus/KEEP-1",
        form={"delta": "5", "reason": "no token"},
        max_redirects=0,
    )
    assert answer.status == 403
    assert text("csrf") in answer.text()
    answer = desktop.context.request.post(
        f"{server}/console/orders/{OTHER}", form={"note": "no token"}, max_redirects=0
    )
    assert answer.status == 403
    assert _quantity(server, "KEEP-1") == before


def test_a_form_sent_twice_applies_once_and_a_link_makes_no_notice(
    desktop: Visit, server: str
) -> None:
    desktop.sign_in(WRITER_KEY)
    page = desktop.page
    page.goto("/console/skus/KEEP-1")
    form = page.locator("form#adjust")
    fields = {
        name: form.locator(f"input[name={name}]").input_value()
        for name in ("csrf_token", "form_key")
    }
    before = _quantity(server, "KEEP-1")
    # What a double click, or a browser that retries, sends: the same form twice.
    answers = [
        desktop.context.request.post(
            f"{server}/console/skus/KEEP-1",
            form={"delta": "1", "reason": "二度押し", **fields},
            max_redirects=0,
        )
        for _ in range(2)
    ]
    assert [a.status for a in answers] == [303, 303]
    assert answers[0].headers["location"] == answers[1].headers["location"]
    assert _quantity(server, "KEEP-1") == before + 1

    page.goto(f"/console/orders/{OTHER}?done=resolved")
    assert page.locator(".notice").count() == 0
    page.goto("/console/skus/KEEP-1?done=adjusted&sku=KEEP-1&delta=0&quantity=0")
    assert page.locator(".notice").count() == 0


def test_the_session_cookie_does_not_carry_the_key(desktop: Visit) -> None:
    desktop.sign_in(WRITER_KEY)
    (cookie,) = [c for c in desktop.context.cookies() if c["name"] == "restock_console"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert WRITER_KEY not in cookie["value"]
    assert not re.search(re.escape(WRITER_KEY[:12]), cookie["value"])
    # Signed out, the same cookie opens nothing.
    desktop.page.click("button:has-text('ログアウト')")
    assert desktop.page.url.endswith("/console/login#top")
    assert desktop.page.locator(".notice").inner_text() == text("signed_out")
    desktop.context.add_cookies([cookie])
    desktop.page.goto("/console")
    assert desktop.page.url.endswith("/console/login")


PLATFORM_KEY = "p-browser-key-0123456789"
SHOP_A_KEY = "a-browser-key-0123456789"
MERCHANT_KEYS = json.dumps(
    [
        {"name": "ops", "key": PLATFORM_KEY, "role": "admin", "merchant": "*"},
        {"name": "tanaka", "key": SHOP_A_KEY, "role": "writer", "merchant": "shop-a"},
    ]
)


def test_the_console_per_merchant(chromium: Any, tmp_path: Path) -> None:
    """A platform session lists the merchants with open failures and works one off at a
    merchant's pages; a merchant's session cannot open another's; every page names its
    merchant (contract v1.3)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'merchants.db'}"
    process = Server(url, "--migrate", RESTOCK_API_KEYS=MERCHANT_KEYS)
    try:
        process.start()
        admin = {"Authorization": f"Bearer {PLATFORM_KEY}"}
        with httpx.Client(base_url=process.url, headers=admin) as api:
            for merchant_id, name, order_no in (
                ("shop-a", "ショップA 本店", rakuten(2001)),
                ("shop-b", "ショップB", rakuten(2002)),
            ):
                _call(api, "PUT", f"/merchants/{merchant_id}", 201, {"name": name})
                api.headers["Merchant-Id"] = merchant_id
                _failed_restock(api, order_no, "GONE-1")
                del api.headers["Merchant-Id"]
        for viewport in (DESKTOP, PHONE):
            visit = Visit(chromium, process.url, viewport)
            try:
                visit.sign_in(PLATFORM_KEY)
                page = visit.page
                assert page.locator(".merchant").inner_text() == "全店舗（プラットフォーム）"
                assert page.get_by_text("ショップA 本店").is_visible()
                assert page.get_by_text("ショップB").is_visible()
                visit.shot("platform-home")
                assert _png_width(visit.shot("platform-home")) == viewport["width"]
                if viewport is PHONE:
                    continue
                page.click("text=ショップA 本店")
                assert page.url.endswith("/console/merchants/shop-a")
                assert "ショップA 本店" in page.locator(".merchant").inner_text()
                assert "shop-a" in page.locator(".merchant").inner_text()
                visit.shot("merchant-home")
                page.click(f"text={rakuten(2001)}")
                assert page.url.endswith(f"/console/merchants/shop-a/orders/{rakuten(2001)}")
                assert "shop-a" in page.locator(".merchant").inner_text()
                visit.shot("merchant-order")
            finally:
                visit.close()
        visit = Visit(chromium, process.url, DESKTOP)
        try:
            visit.sign_in(SHOP_A_KEY)
            page = visit.page
            assert "ショップA 本店" in page.locator(".merchant").inner_text()
            assert page.get_by_text(rakuten(2001)).first.is_visible()
            assert page.get_by_text(rakuten(2002)).count() == 0
            answer = page.goto("/console/merchants/shop-b")
            assert answer is not None and answer.status == 404
            assert page.get_by_text(text("not_found_merchant")).is_visible()
            assert "ショップB" not in page.content()
            visit.shot("other-merchant-404")
        finally:
            visit.close()
    finally:
        process.close()
