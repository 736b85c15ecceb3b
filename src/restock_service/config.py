"""Settings, read once from the environment (prefix ``RESTOCK_``)."""

import difflib
import ipaddress
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from restock_service.access import ApiKeys

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./restock.db"
PREFIX = "RESTOCK_"
# Read by the tests alone, never by the service.
NOT_SETTINGS = frozenset({"RESTOCK_TEST_PG_DSN"})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_SCHEME_ALIASES = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """Map the accepted URL spellings onto the async drivers we ship."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEME_ALIASES:
        accepted = ", ".join(f"{s}://" for s in _SCHEME_ALIASES)
        raise ValueError(f"unsupported database URL scheme {scheme!r}; use one of {accepted}")
    return f"{_SCHEME_ALIASES[scheme]}://{rest}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESTOCK_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the database."
    )
    # A pool that keeps what it opened: reopening connections under load (connect, type
    # lookups, prepares) cost more than waiting for a pooled one. 16 covers concurrency 32
    # on 2 workers.
    db_pool_size: int = Field(default=16, ge=1, le=200, description="PostgreSQL connections.")
    db_connect_timeout_s: float = Field(default=2.0, gt=0)
    db_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="transaction: PostgreSQL is reached through a pooler in transaction mode "
        "(PgBouncer before 1.21): each statement runs in a transaction of its own, prepared "
        "without a name.",
    )
    db_deadline_s: float = Field(
        default=4.0,
        gt=0,
        description="Bound on one unit of database work, retries included; a statement "
        "still running then is cancelled on the server.",
    )
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    db_retry_attempts: int = Field(default=5, ge=1, le=50)
    retry_after_s: int = Field(default=2, ge=1)
    merchant_max_inflight: int | None = Field(
        default=None,
        ge=1,
        description="Requests of one merchant a process serves at once (default: half the "
        "database pool).",
    )
    merchant_queue_s: float = Field(
        default=1.0,
        ge=0,
        description="How long a request past its merchant's share waits for a place (429 then).",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    log_format: Literal["text", "json"] = "text"
    access_log: bool = Field(
        default=False, description="uvicorn's line per request (metrics count requests too)."
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description='"key1:writer,key2:reader", or [{"name":…,"key":…,"role":…}]; empty: no auth.',
    )
    console_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Signs the console's session cookies; empty: derived from the keys.",
    )
    console_session_s: int = Field(
        default=8 * 3600, ge=60, description="How long a console sign-in lasts."
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="The proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: "
        "addresses or networks, comma-separated, or *; empty: none, the connecting address "
        "is the client's.",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    idempotency_ttl_s: int = Field(
        default=86400, ge=1, description="How long a key's first answer is replayed."
    )
    idempotency_lock_s: float = Field(
        default=30.0,
        gt=0,
        description="Accepted and inert: the contract's bound on a key held by a request "
        "that never answered, which binds nothing, as keys are taken with their effects.",
    )
    idempotency_required: bool = Field(
        default=False, description="Refuse writes without an Idempotency-Key (400)."
    )
    idempotency_purge_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often each worker removes forgotten keys and lapsed console sign-outs.",
    )
    graceful_shutdown_s: int = Field(default=30, ge=0)
    drain_s: float = Field(
        default=0.0,
        ge=0,
        description="After SIGTERM, how long to go on serving with /ready answering 503 before "
        "closing the listening socket.",
    )
    # Above the 60 s idle timeout of most load balancers: the balancer, not the service,
    # should be the one that closes an idle connection, or a request sent on it as it
    # closes is lost.
    keep_alive_s: int = Field(
        default=75, gt=0, description="How long an idle keep-alive connection stays open."
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Bound on receiving a request's line and headers."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Bound on receiving a request's body; then 408."
    )

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not a log level; use one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("api_keys")
    @classmethod
    def _parse_keys(cls, value: SecretStr) -> SecretStr:
        ApiKeys.parse(value.get_secret_value())  # fail at start, not at the first request
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        # uvicorn takes an entry it cannot parse as a name that never matches: refuse it here.
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries == ["*"]:
            return "*"
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a network") from None
        return ",".join(entries)

    @property
    def merchant_places(self) -> int:
        """Requests of one merchant a process serves at once (fair_share.py)."""
        return self.merchant_max_inflight or max(1, self.db_pool_size // 2)

    def keys(self) -> ApiKeys:
        return ApiKeys.parse(self.api_keys.get_secret_value())

    @field_validator("database_url")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_database_url(value)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line for each ``RESTOCK_*`` variable that names no setting, with the setting it
    probably meant, if one is close."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or upper in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name} is not a setting{hint}")
    return problems
