"""The console's sign-in across real server processes: a sign-out ends the session on every
process, and the sign-in limit believes X-Forwarded-For only from a configured proxy."""

import re

import httpx
import pytest
from pydantic import ValidationError

from restock_service import console
from restock_service.config import Settings
from tests.helpers import csrf_of
from tests.servers import Server, running_servers
from tests.test_console import KEYS, WRITER_KEY

pytestmark = pytest.mark.processes

LIMIT = console.SignInLimiter().failures


def sign_in(http: httpx.Client, key: str, **headers: str) -> httpx.Response:
    page = http.get("/console/login", headers=headers)
    assert page.status_code == 200, page.text
    form = {"api_key": key, "csrf_token": csrf_of(page)}
    return http.post("/console/login", data=form, headers=headers)


def test_a_sign_out_ends_the_session_on_every_process(database_url: str) -> None:
    with (
        running_servers(database_url, 2, RESTOCK_API_KEYS=KEYS) as (one, two),
        httpx.Client(base_url=one, timeout=10) as browser,
    ):
        assert sign_in(browser, WRITER_KEY).status_code == 303
        copied = browser.cookies["restock_console"]
        for url in (one, two):
            with httpx.Client(timeout=10, cookies={"restock_console": copied}) as copy:
                assert copy.get(f"{url}/console").status_code == 200

        home = browser.get("/console")
        signed_out = browser.post("/console/logout", data={"csrf_token": csrf_of(home)})
        assert signed_out.status_code == 303

        answers = []
        for n in range(20):
            # A connection of its own each time, to each process in turn.
            with httpx.Client(timeout=10, cookies={"restock_console": copied}) as copy:
                answers.append(copy.get(f"{(one, two)[n % 2]}/console"))
    assert [(a.status_code, a.headers.get("location")) for a in answers] == [
        (303, "/console/login")
    ] * 20


def _wrong_keys_from_rotating_forwarded_addresses(server: Server) -> list[int]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        return [
            sign_in(http, "guess", **{"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(12)
        ]


def test_forwarded_addresses_count_only_from_a_configured_proxy(database_url: str) -> None:
    direct = Server(database_url, RESTOCK_API_KEYS=KEYS)
    try:
        direct.start()
        statuses = _wrong_keys_from_rotating_forwarded_addresses(direct)
    finally:
        direct.close()
    # The forwarded addresses are the client's own say: the connecting address is limited.
    assert statuses == [401] * (LIMIT - 1) + [429] * (12 - LIMIT + 1)

    proxied = Server(database_url, RESTOCK_API_KEYS=KEYS, RESTOCK_FORWARDED_ALLOW_IPS="127.0.0.1")
    try:
        proxied.start()
        statuses = _wrong_keys_from_rotating_forwarded_addresses(proxied)
        with httpx.Client(base_url=proxied.url, timeout=10) as http:
            one_client = [
                sign_in(http, "guess", **{"X-Forwarded-For": "203.0.113.7"}).status_code
                for _ in range(LIMIT)
            ]
            other_client = sign_in(http, WRITER_KEY, **{"X-Forwarded-For": "203.0.113.8"})
    finally:
        proxied.close()
    # Behind the trusted proxy each forwarded address is a client of its own.
    assert statuses == [401] * 12
    assert one_client == [401] * (LIMIT - 1) + [429]
    assert other_client.status_code == 303


def test_the_trusted_proxies_are_addresses_or_networks_or_any() -> None:
    assert Settings().forwarded_allow_ips == ""
    given = Settings(forwarded_allow_ips=" 10.0.0.1 , 10.1.0.0/16,::1")
    assert given.forwarded_allow_ips == "10.0.0.1,10.1.0.0/16,::1"
    assert Settings(forwarded_allow_ips="*").forwarded_allow_ips == "*"
    refusal = re.escape("'proxy.internal' is not an address or a network")
    with pytest.raises(ValidationError, match=refusal):
        Settings(forwarded_allow_ips="10.0.0.1,proxy.internal")
