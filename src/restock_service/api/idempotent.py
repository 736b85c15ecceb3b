"""Idempotency keys at the HTTP edge: a keyed write is answered by ``idempotency.once``.

``Idempotent`` sits behind the Gate (the body is read and the caller known) and in front of
both ways a request is answered (ShortWay and FastAPI), so every write route gets keys by
this one mechanism. It runs the rest of the app as the keyed unit's work, holds the answer
back until the unit committed it with the effect, and then sends it.
"""

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from starlette.routing import BaseRoute, Match

from restock_service import idempotency
from restock_service.access import Caller
from restock_service.api.errors import problem_for
from restock_service.api.middleware import (
    CALLER,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header,
    replay,
)
from restock_service.config import Settings
from restock_service.idempotency import Answer, Outcome
from restock_service.metrics import Metrics

log = logging.getLogger(__name__)

_KEY_HEADER = idempotency.HEADER.lower().encode()
_REPLAYED = (idempotency.REPLAYED_HEADER.lower().encode(), b"true")
_REFUSALS: dict[type[Exception], str] = {
    idempotency.KeyReused: "mismatch",
    idempotency.KeyInFlight: "in_flight",
}


class _Held:
    """The inner app's answer, held back: sent as it is, or stored as an ``Answer``."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    def answer(self) -> Answer:
        start = self.messages[0]
        content_type = next(
            (v for k, v in start.get("headers", ()) if k.lower() == b"content-type"), b""
        )
        body = b"".join(m.get("body", b"") for m in self.messages[1:])
        return Answer(start["status"], bytes(content_type).decode("latin-1"), body)


class Idempotent:
    def __init__(
        self, app: ASGIApp, *, routes: Sequence[BaseRoute], settings: Settings, metrics: Metrics
    ) -> None:
        self.app = app
        self.writes = [
            route
            for route in routes
            if idempotency.WRITE_METHODS & set(getattr(route, "methods", None) or ())
        ]
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in idempotency.WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        raw = header(scope, _KEY_HEADER)
        if raw is None and not self.settings.idempotency_required:
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        if route is None:  # not a write route: 404 or 405, as without a key
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # so that a request answered here is counted by its route
        try:
            if raw is None:
                raise idempotency.KeyRequired()
            key = idempotency.parse_key(raw)
            body = await _body(receive)
            now = datetime.now(UTC)
            caller: Caller | None = scope.get(CALLER)
            claim = idempotency.new_claim(
                caller.name if caller else "",
                key,
                idempotency.fingerprint(scope["method"], scope["path"], body),
                now,
                lock_s=self.settings.idempotency_lock_s,
                ttl_s=self.settings.idempotency_ttl_s,
            )
            held = _Held()

            async def work() -> Answer:
                nonlocal held
                held = _Held()
                await self.app(scope, replay(body, receive), held.send)
                return held.answer()

            outcome, answer = await idempotency.once(scope["app"].state.store, claim, now, work)
        except Exception as exc:
            response = problem_for(exc, scope["method"], scope["path"], self.settings.retry_after_s)
            if response is None:
                raise
            refusal = _REFUSALS.get(type(exc))
            if refusal is not None:
                self.metrics.idempotency.labels(refusal).inc()
            await response(scope, receive, send)
            return
        if outcome is Outcome.ANSWERED:
            for message in held.messages:
                await send(message)
            return
        self.metrics.idempotency.labels("replayed").inc()
        log.info(
            "replayed the stored answer (status %d) to %s %s",
            answer.status,
            scope["method"],
            scope["path"],
            extra={"idempotency_key": key, "replayed": True, "status": answer.status},
        )
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-type", answer.content_type.encode("latin-1")),
                    (b"content-length", str(len(answer.body)).encode()),
                    _REPLAYED,
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    def _route(self, scope: Scope) -> BaseRoute | None:
        for route in self.writes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None


async def _body(receive: Receive) -> bytes:
    """The request body (the Gate has read it, and hands it over whole)."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)
