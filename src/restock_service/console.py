"""The operations console without HTTP: sessions, the sign-in limit, Japan time, the
Japanese wording of refusals, and the views that its pages show.

api/console.py turns these into pages and answers; nothing here knows FastAPI. The
merchant-facing texts (outcome messages) come from messages.py through the records; what is
here are the console's own labels.
"""

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol
from urllib.parse import urlencode

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from pydantic import ValidationError

from restock_service import idempotency
from restock_service.access import ApiKeys, Caller, Role
from restock_service.errors import FieldProblem, field_path
from restock_service.idempotency import Claim
from restock_service.keys import KeyLookups, Keyring
from restock_service.messages import Mall, RestockStatus
from restock_service.rules import ADJUSTED_QUANTITY_LIMIT
from restock_service.schemas import (
    MovementOut,
    RestockRecordOut,
    SyncExecutionOut,
)
from restock_service.tables import DEFAULT_MERCHANT, PLATFORM

# --- Japan time ------------------------------------------------------------------------------

JST = timezone(timedelta(hours=9), "JST")  # Japan keeps no daylight saving time


def jst(value: datetime | None) -> str:
    """``2026-05-25 19:00:00 +09:00``: a moment in Japan time, with its offset."""
    if value is None:
        return ""
    return value.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S +09:00")


# --- the console's own labels ----------------------------------------------------------------

MALL_LABEL: dict[Mall, str] = {
    Mall.RAKUTEN: "楽天市場",
    Mall.YAHOO: "Yahoo!ショッピング",
    Mall.AMAZON: "Amazon",
}
STATUS_LABEL: dict[RestockStatus, str] = {
    RestockStatus.RESTORED: "在庫戻し済み",
    RestockStatus.FAILED: "失敗（未対応）",
    RestockStatus.RESOLVED: "対応済み",
}
# The ledger's reasons (MovementOut.reason), as 在庫数変更履歴 screens name them.
MOVEMENT_LABEL: dict[str, str] = {
    "set": "在庫数の登録・上書き",
    "sync_execution": "在庫連携（受注の引当）",
    "restock": "在庫戻し",
    "adjustment": "手動調整",
    "delete": "商品の削除",
}
ROLE_LABEL: dict[Role, str] = {
    Role.WRITER: "更新可",
    Role.READER: "閲覧のみ",
    Role.ADMIN: "管理者",
}
DEFAULT_ADJUSTMENT_REASON = "在庫戻し失敗の手動調整"

# Page-level refusals and outcomes.
TEXT = {
    "not_found_order": "この受注番号の記録はありません。受注番号をご確認ください。",
    "not_found_sku": "この商品コードの記録はありません。商品コードをご確認ください。",
    "not_found_page": "ページが見つかりません。",
    "not_found_merchant": "この店舗は登録されていません。店舗IDをご確認ください。",
    "no_console_secret": (
        "コンソールのログインには RESTOCK_CONSOLE_SECRET の設定が必要です"
        "（APIキーがデータベースにのみあるため）。システム管理者にお問い合わせください。"
    ),
    "sku_not_registered": (
        "この商品コードは在庫連携に登録されていません。先に商品を登録してから調整してください。"
    ),
    "not_failed": "この注文の在庫戻しは「{status}」のため、対応済みにできません。",
    "no_record": "この受注番号の在庫戻しは記録されていません。",
    "csrf": (
        "フォームの有効期限が切れたか、正しくない送信です。ページを開き直してから、"
        "もう一度お試しください。変更は行っていません。"
    ),
    "reader": "閲覧のみの権限のため、変更できません。変更は行っていません。",
    "bad_form": "送信内容を読み取れませんでした。変更は行っていません。",
    "bad_query": "ページの指定が正しくありません。",
    "unavailable": (
        "データベースに接続できません。しばらく待ってから、もう一度お試しください。"
        "変更は行われていないか、すべて完了しています。"
    ),
    "unexpected": (
        "予期しないエラーが発生しました。ページを開き直して結果をご確認ください。"
        "繰り返し起きる場合は、システム管理者にお問い合わせください。"
    ),
    "sign_in_failed": "APIキーが正しくありません。",
    "sign_in_limited": (
        "ログインの失敗が続いたため、一時的にログインできません。{seconds}秒後にもう一度お試しください。"
    ),
    "signed_out": "ログアウトしました。",
    "session_ended": "ログインの有効期限が切れました。もう一度ログインしてください。",
    "adjusted": "{sku} の在庫数を {delta:+,} 調整しました（調整後の在庫数: {quantity:,}）。",
    "resolved": "この注文を対応済みにしました。",
    "form_stale": (
        "このフォームは古いため送信できません。ページを開き直してから、もう一度お試しください。"
        "変更は行っていません。"
    ),
    "form_reused": (
        "このフォームは別の内容ですでに送信されています。変更は行っていません。"
        "入力し直す場合は、ページを開き直してからもう一度お試しください。"
    ),
    "form_in_flight": (
        "このフォームの送信をまだ処理しています。しばらく待ってから、ページを開き直して"
        "結果をご確認ください。"
    ),
}


def text(name: str, **values: Any) -> str:
    return TEXT[name].format(**values)


# --- refusals, in Japanese, next to the field they concern ---------------------------------

FormErrors = dict[str, str]  # form field → what is wrong with it


def field_message(field_name: str, kind: str, ctx: Mapping[str, Any]) -> str:
    """One problem of one field, as the console says it."""
    if kind in ("missing", "string_too_short"):
        return "入力してください。"
    if kind == "string_too_long":
        return f"{ctx.get('max_length', '')}文字以内で入力してください。"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "整数で入力してください（例: 3、-2）。"
    if kind == "greater_than_equal":
        return f"{ctx.get('ge', 0):,} 以上の数を入力してください。"
    if kind == "less_than_equal":
        return f"{ctx.get('le', 0):,} 以下の数を入力してください。"
    if kind == "string_pattern_mismatch":
        if field_name == "order_no":
            return "受注番号は半角の英数字・「-」・「_」で入力してください。"
        return "使用できない文字が含まれています。"
    if kind == "order_no_shape":
        return "このモールの受注番号の形式ではありません。"
    if field_name == "delta" and kind == "value_error":
        return "0 以外の数を入力してください。"
    return "入力内容をご確認ください。"


def validation_errors(exc: ValidationError) -> FormErrors:
    """A request model's refusal, by form field (the form fields bear the API's names)."""
    errors: FormErrors = {}
    for error in exc.errors():
        name = field_path(tuple(error["loc"])) or "form"
        errors.setdefault(name, field_message(name, error["type"], error.get("ctx") or {}))
    return errors


def problem_errors(problems: Iterable[FieldProblem]) -> FormErrors:
    """A service's InvalidRequest, by form field."""
    errors: FormErrors = {}
    for problem in problems:
        name = field_path(problem.loc) or "form"
        if name == "delta" and problem.type == "value_error":  # rules.adjustment_refused
            message = (
                "調整後の在庫数が範囲を超えます。調整後の在庫数は "
                f"-{ADJUSTED_QUANTITY_LIMIT:,} ～ {ADJUSTED_QUANTITY_LIMIT:,} に収めてください。"
            )
        else:
            message = field_message(name, problem.type, {})
        errors.setdefault(name, message)
    return errors


_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_integer(raw: str) -> int | str:
    """The integer a person typed (full-width digits and signs too), or the raw text."""
    cleaned = unicodedata.normalize("NFKC", raw).strip().replace(",", "").replace("−", "-")
    return int(cleaned) if _INTEGER.fullmatch(cleaned) and len(cleaned) <= 20 else raw


def adjustment_body(form: Mapping[str, str]) -> dict[str, Any]:
    """The API's adjustment body from the console's form: the same model validates both."""
    body: dict[str, Any] = {
        "delta": parse_integer(form.get("delta", "")) if form.get("delta", "").strip() else None,
        "reason": form.get("reason", "").strip(),
    }
    order_no = form.get("order_no", "").strip()
    if order_no:
        body["order_no"] = order_no
    if body["delta"] is None:
        del body["delta"]
    return body


# --- writes that apply once ----------------------------------------------------------------

CSRF_FIELD = "csrf_token"
FORM_KEY_FIELD = "form_key"
# The fields that are not the form's request: the session's token, and the form's key.
_NOT_THE_REQUEST = frozenset({CSRF_FIELD, FORM_KEY_FIELD})
_FORM_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


def new_form_key() -> str:
    """A fresh key for one rendered form that writes: its posts apply once."""
    return secrets.token_urlsafe(16)


def form_claim(
    merchant: str,
    caller: str | None,
    path: str,
    form: Mapping[str, str],
    now: datetime,
    *,
    ttl_s: float,
) -> Claim | None:
    """The claim of a posted form on its key (None when it carries none that a form of
    ours could have): the same form is the same path and fields, whatever its CSRF token."""
    key = form.get(FORM_KEY_FIELD, "")
    if not _FORM_KEY.fullmatch(key):
        return None
    fields = sorted((name, value) for name, value in form.items() if name not in _NOT_THE_REQUEST)
    request = idempotency.fingerprint("POST", path, urlencode(fields).encode())
    return idempotency.new_claim(
        merchant, caller or "", idempotency.CONSOLE_PREFIX + key, request, now, ttl_s=ttl_s
    )


# --- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's console session, as its signed cookie holds it.

    ``role`` is None before sign-in (the session only carries the sign-in form's CSRF
    token); ``name`` is None when no keys are configured.
    """

    sid: str
    name: str | None
    role: Role | None
    merchant: str = DEFAULT_MERCHANT  # the key's merchant; PLATFORM for a platform key

    @property
    def signed_in(self) -> bool:
        return self.role is not None

    @property
    def may_write(self) -> bool:
        return self.role in (Role.WRITER, Role.ADMIN)

    @property
    def platform(self) -> bool:
        return self.merchant == PLATFORM

    @property
    def caller(self) -> Caller | None:
        """The key the session signed in with; None before sign-in and with no keys."""
        if self.name is None or self.role is None:
            return None
        return Caller(self.name, self.role, self.merchant)

    @property
    def actor(self) -> str | None:
        """What a write of the session records as its actor, as the API does."""
        caller = self.caller
        return caller.actor if caller is not None else None


def signing_secret(configured: str, keys: ApiKeys) -> bytes:
    """``RESTOCK_CONSOLE_SECRET``, or one derived from the configured keys' digests, which
    every worker started with the same keys derives alike."""
    if configured:
        return configured.encode("utf-8")
    digests = sorted(digest for digest, _ in keys.entries)
    return hashlib.sha256(b"restock-console-session\x00" + b"".join(digests)).digest()


class SignOuts(Protocol):
    """Where sign-outs are kept for every worker to see (store/ implements it per
    database): a cookie carries its session, so only a row there can end it everywhere."""

    async def sign_out(self, sid: str, expires_at: datetime) -> None:
        """Keep ``sid`` as signed out until ``expires_at``."""

    async def signed_out(self, sid: str) -> bool: ...

    async def purge_sign_outs(self, now: datetime, limit: int) -> int:
        """Remove up to ``limit`` sign-outs lapsed by ``now``; how many were removed."""


# How long a browser that signed in stays known to the sign-in limit (its device cookie).
DEVICE_LIFETIME_S = 180 * 86400


def signed(secret: bytes, salt: str, clock: Callable[[], float]) -> URLSafeTimedSerializer:
    """A serializer of timestamped, signed cookie values, on ``clock``."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return URLSafeTimedSerializer(secret, salt=salt, signer=Signer)


class SessionStore(SignOuts, KeyLookups, Protocol):
    """What sessions ask the database: sign-outs, and the keys kept there."""


class Sessions:
    """Signed session cookies: who signed in (name, role and merchant), never a key.

    A session lives ``lifetime_s`` from sign-in. Signing out ends it in every worker: its id
    is kept in the database (``SignOuts``) until the cookie would have lapsed anyway, and
    each signed-in request looks it up there. A session whose key is no longer configured,
    or no longer in use in the database (``keyring``), ends at once (within the keyring's
    ``TTL_S`` on other processes).

    A browser that signed in also gets a long-lived *device cookie*: a random id of that
    browser and who signed in there, no session and no authority, only what the sign-in
    limit tells known browsers by (``SignInLimiter``).
    """

    SALT = "restock-console-session"
    DEVICE_SALT = "restock-console-device"

    def __init__(
        self,
        secret: bytes,
        keys: ApiKeys,
        lifetime_s: int,
        clock: Callable[[], float] = time.time,
        keyring: Keyring | None = None,
    ) -> None:
        self._secret = secret
        self._serializer = signed(secret, self.SALT, clock)
        self._devices = signed(secret, self.DEVICE_SALT, clock)
        self._callers = {caller for _, caller in keys.entries}
        self._names = {caller.name for caller in self._callers}
        self._keyring = keyring
        self.open = not keys.enabled  # no keys: no sign-in, everyone writes
        self.lifetime_s = lifetime_s
        self._clock = clock

    async def look(self, store: KeyLookups) -> None:
        """Close an open console once a key is made in the database (it never opens again,
        so a process's sessions may follow the first request that finds one)."""
        if self.open and self._keyring is not None and await self._keyring.enabled(store):
            self.open = False

    def start(self, caller: Caller | None) -> tuple[Session, str]:
        """A new session for ``caller`` (None: before sign-in), and its cookie's value."""
        if caller is not None:
            session = Session(secrets.token_urlsafe(16), caller.name, caller.role, caller.merchant)
        elif self.open:
            session = Session(secrets.token_urlsafe(16), None, Role.WRITER)
        else:
            session = Session(secrets.token_urlsafe(16), None, None)
        payload = {"s": session.sid, "n": session.name, "r": session.role}
        if session.merchant != DEFAULT_MERCHANT:
            payload["m"] = session.merchant
        return session, self._serializer.dumps(payload)

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, when it is genuine and current (``current`` also
        asks whether it was signed out, and whether a key of the database is in use)."""
        if not cookie:
            return None
        try:
            payload = self._serializer.loads(cookie, max_age=self.lifetime_s)
        except BadSignature:  # also an expired one (SignatureExpired)
            return None
        if not isinstance(payload, dict):
            return None
        sid, name, role = payload.get("s"), payload.get("n"), payload.get("r")
        merchant = payload.get("m", DEFAULT_MERCHANT)  # a session of v1.2 is default's
        if not isinstance(sid, str) or not isinstance(merchant, str):
            return None
        if role is None:
            return Session(sid, None, None) if not self.open else None
        if role not in Role.__members__.values():
            return None
        if self.open:
            return Session(sid, None, Role.WRITER) if name is None else None
        if not isinstance(name, str):
            return None
        session = Session(sid, name, Role(role), merchant)
        if session.caller not in self._callers and self._keyring is None:
            return None
        return session

    async def current(self, cookie: str | None, store: SessionStore) -> Session | None:
        """The session a cookie holds, when it is genuine, current and not signed out (a
        signed-in one is looked up; one before sign-in has nothing to sign out)."""
        session = self.read(cookie)
        if session is None or not session.signed_in or self.open:
            return session
        caller = session.caller
        if caller not in self._callers:  # a key of the database: still in use?
            assert self._keyring is not None and caller is not None
            if not await self._keyring.in_use(caller, store):
                return None
        return None if await store.signed_out(session.sid) else session

    async def end(self, session: Session, sign_outs: SignOuts) -> None:
        """Sign out: kept until every cookie signed by now has lapsed."""
        until = datetime.fromtimestamp(self._clock() + self.lifetime_s + 1, UTC)
        await sign_outs.sign_out(session.sid, until)

    def device_cookie(self, caller: Caller, device: str | None) -> str:
        """The device cookie of a browser where ``caller`` has just signed in: the id it
        was known by (``device``), or a new one."""
        return self._devices.dumps({"d": device or secrets.token_urlsafe(16), "n": caller.name})

    def device(self, cookie: str | None) -> str | None:
        """The id of this browser, by a genuine and current device cookie whose name is
        still configured; None for a browser not known."""
        if not cookie:
            return None
        try:
            payload = self._devices.loads(cookie, max_age=DEVICE_LIFETIME_S)
        except BadSignature:
            return None
        if not isinstance(payload, dict):
            return None
        if self._keyring is None and payload.get("n") not in self._names:
            return None
        device = payload.get("d")
        return device if isinstance(device, str) else None

    def csrf_token(self, session: Session) -> str:
        """The token every writing form of this session carries."""
        mac = hmac.new(self._secret, b"csrf\x00" + session.sid.encode(), hashlib.sha256)
        return mac.hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(
            self.csrf_token(session).encode(), token.encode("utf-8", "replace")
        )


class SignInLimiter:
    """At most ``failures`` failed sign-ins in ``window_s`` from one source, counted in this
    process (each worker counts its own).

    The source is OWASP's "device cookies" scheme: a browser known by its device cookie
    (``Sessions.device``) counts against that cookie alone, so a guesser at a shared address
    (an office, a VPN) does not lock out those who have signed in from it before, and a
    stolen device cookie locks out only itself. Any other browser counts against its client
    address: a new browser behind an address under attack waits as the guesser does. Keys
    name no user, so a holder of any key could sign in again and again for fresh device
    cookies, each with its own count: ``may_issue`` gives one name at most ``failures`` new
    ones in the window.
    """

    def __init__(
        self,
        failures: int = 5,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 10_000,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self._clock = clock
        self._max_sources = max_sources
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, address: str, device: str | None) -> int | None:
        """Seconds until a sign-in from ``address`` on a browser known as ``device`` may be
        tried; None when it may now."""
        times = self._recent(_source(address, device))
        if len(times) < self.failures:
            return None
        return max(1, int(times[0] + self.window_s - self._clock() + 0.999))

    def failed(self, address: str, device: str | None) -> None:
        self._note(_source(address, device))

    def may_issue(self, name: str) -> bool:
        """Whether a browser where ``name`` just signed in, not known before, gets a device
        cookie: at most ``failures`` new ones per name in the window (it is then noted)."""
        source = f"issued to {name}"
        if len(self._recent(source)) >= self.failures:
            return False
        self._note(source)
        return True

    def _note(self, source: str) -> None:
        times = self._recent(source)
        if not times and len(self._seen) >= self._max_sources:
            self._seen.pop(next(iter(self._seen)))  # the source first seen goes first
        times.append(self._clock())
        self._seen[source] = times

    def _recent(self, source: str) -> deque[float]:
        times = self._seen.get(source, deque())
        horizon = self._clock() - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            self._seen.pop(source, None)
        return times


def _source(address: str, device: str | None) -> str:
    return f"device {device}" if device is not None else f"address {address}"


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path of this site, never another site."""
    if (
        target
        and (target == "/console" or target.startswith(("/console/", "/console?")))
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return "/console"


# --- notices -------------------------------------------------------------------------------


class Notices:
    """One-time notices: what a write of this session just did, sealed by its redirect in a
    short-lived signed cookie, and told once by the page it leads to. Nothing that a link can
    carry makes a notice."""

    SALT = "restock-console-notice"
    SHOWN = frozenset({"adjusted", "resolved", "signed_out"})

    def __init__(
        self, secret: bytes, max_age_s: int = 60, clock: Callable[[], float] = time.time
    ) -> None:
        self._serializer = signed(secret, self.SALT, clock)
        self.max_age_s = max_age_s

    def seal(self, session: Session, page: str, name: str, **values: str | int) -> str:
        """The cookie that tells ``page``, in this session, the notice ``name``."""
        return self._serializer.dumps({"s": session.sid, "p": page, "t": name, "v": values})

    def open(self, cookie: str | None, session: Session, page: str) -> str | None:
        """The notice's text, when the cookie is genuine, recent, and this session's for
        this page."""
        if not cookie:
            return None
        try:
            payload = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if (
            not isinstance(payload, dict)
            or payload.get("s") != session.sid
            or payload.get("p") != page
            or payload.get("t") not in self.SHOWN
            or not isinstance(payload.get("v"), dict)
        ):
            return None
        try:
            return text(payload["t"], **payload["v"])
        except (KeyError, ValueError, TypeError):
            return None


# --- the views ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One step of an order's story: when, what kind, and what to show of it."""

    at: datetime
    kind: str  # sync, request, repeats, movement, resolution
    rank: int  # order among steps of the same moment
    sync: SyncExecutionOut | None = None
    record: RestockRecordOut | None = None
    movement: MovementOut | None = None


@dataclass(frozen=True, slots=True)
class ItemView:
    """One sku of a failed restock, as the adjustment forms need it."""

    sku: str
    quantity: int  # what the sync deducted for the order
    missing: bool  # not registered when the restock was decided
    current: int | None  # its quantity now; None when it is not registered
    adjusted: int  # what adjustments naming this order have added so far

    @property
    def remaining(self) -> int:
        return self.quantity - self.adjusted


@dataclass(frozen=True, slots=True)
class OrderStory:
    order_no: str
    record: RestockRecordOut | None
    sync: SyncExecutionOut | None
    movements: Sequence[MovementOut]
    events: Sequence[Event]
    items: Sequence[ItemView] = field(default_factory=tuple)

    @property
    def exists(self) -> bool:
        return self.record is not None or self.sync is not None or bool(self.movements)

    @property
    def open_failure(self) -> bool:
        return self.record is not None and self.record.status is RestockStatus.FAILED


def order_story(
    order_no: str,
    record: RestockRecordOut | None,
    sync: SyncExecutionOut | None,
    movements: Sequence[MovementOut],
    quantities: Mapping[str, int],
) -> OrderStory:
    """The order's whole story in time order: its sync execution, the restock request and
    its outcome (with repeats), every ledger row naming it, and the resolution."""
    events: list[Event] = []
    if sync is not None:
        events.append(Event(sync.executed_at, "sync", 0, sync=sync))
    if record is not None:
        events.append(Event(record.requested_at, "request", 1, record=record))
        if record.repeat_requests:
            events.append(Event(record.completed_at, "repeats", 2, record=record))
        if record.resolution is not None:
            events.append(Event(record.resolution.resolved_at, "resolution", 4, record=record))
    events += [Event(m.at, "movement", 3, movement=m) for m in movements]
    events.sort(key=lambda e: (e.at, e.rank, e.movement.id if e.movement else 0))

    items: list[ItemView] = []
    if record is not None and record.status is not RestockStatus.RESTORED:
        adjusted: dict[str, int] = {}
        for m in movements:
            if m.reason == "adjustment":
                adjusted[m.sku] = adjusted.get(m.sku, 0) + m.delta
        missing = set(record.missing_skus)
        items = [
            ItemView(
                sku=line.sku,
                quantity=line.quantity,
                missing=line.sku in missing,
                current=quantities.get(line.sku),
                adjusted=adjusted.get(line.sku, 0),
            )
            for line in record.items
        ]
    return OrderStory(order_no, record, sync, movements, events, items)


@dataclass(slots=True)
class Console:
    """What the console keeps for the life of the process: its sessions, sign-in limit, the
    keys that sign in (every key of the deployment: a merchant's session shows its
    merchant's pages, a platform session every merchant's) and the signer of its notices.

    ``signs_in`` is False when nothing secret signs the cookies: no RESTOCK_CONSOLE_SECRET,
    and no RESTOCK_API_KEYS to derive one from. Such a console serves an open deployment
    only; once keys are made in the database, its sign-in asks for the secret.
    """

    sessions: Sessions
    limiter: SignInLimiter
    keyring: Keyring
    notices: Notices
    signs_in: bool

    @classmethod
    def of(cls, keyring: Keyring, secret: str, lifetime_s: int) -> "Console":
        keys = keyring.configured
        signing = signing_secret(secret, keys)
        sessions = Sessions(signing, keys, lifetime_s, keyring=keyring)
        return cls(
            sessions, SignInLimiter(), keyring, Notices(signing), bool(secret) or keys.enabled
        )
