"""Idempotency keys at the HTTP edge: a keyed write is answered by ``idempotency.once``.

``Idempotent`` sits behind the Gate (the body is read, the caller and merchant known) and in
front of both ways a request is answered (ShortWay and FastAPI), so every write route gets
keys by this one mechanism. It runs the rest of the app as the keyed request (``KEYED`` in
the ASGI scope, which the request's Scope carries to the store), whose write takes the key
with its effect, and holds the answer back: a request that found the key held is run
again as the replay of the receipt the key holds (idempotency.once).
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
    KEYED,
    MERCHANT,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    replay,
)
from restock_service.config import Settings
from restock_service.idempotency import Outcome
from restock_service.metrics import Metrics

log = logging.getLogger(__name__)

_KEY_HEADER = idempotency.HEADER.lower().encode()
_REPLAYED = (idempotency.REPLAYED_HEADER.lower().encode(), b"true")
_ROUTES_KEPT = 4096  # (method, path) lookups kept; a sku's path is one each
_REFUSALS: dict[type[Exception], str] = {
    idempotency.KeyReused: "mismatch",
    idempotency.KeyInFlight: "in_flight",
}


class _Held:
    """The inner app's answer, held back until it is known to be the request's."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    def replayed(self) -> list[Message]:
        """The answer, marked as a replay."""
        start, *rest = self.messages
        return [{**start, "headers": [*start.get("headers", ()), _REPLAYED]}, *rest]


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
        self._routes: dict[tuple[str, str], BaseRoute | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in idempotency.WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == _KEY_HEADER]
        if not given and not self.settings.idempotency_required:
            await self.app(scope, receive, send)
            return
        route = self._route(scope)
        if route is None:  # not a write route: 404 or 405, as without a key
            await self.app(scope, receive, send)
            return
        scope["route"] = route  # so that a request answered here is counted by its route
        try:
            if not given:
                raise idempotency.KeyRequired()
            key = idempotency.parse_key(given)
            body = await _body(receive)
            now = datetime.now(UTC)
            caller: Caller | None = scope.get(CALLER)
            claim = idempotency.new_claim(
                scope[MERCHANT],
                caller.actor if caller else "",  # a platform key's apart from a merchant's
                key,
                idempotency.fingerprint(scope["method"], scope["path"], body),
                now,
                ttl_s=self.settings.idempotency_ttl_s,
            )

            async def work(keyed: idempotency.Keyed) -> _Held:
                held = _Held()
                scope[KEYED] = keyed  # the first answer's, then the replay's
                await self.app(scope, replay(body, receive), held.send)
                return held

            outcome, held = await idempotency.once(scope["app"].state.store, claim, now, work)
        except Exception as exc:
            response = problem_for(exc, scope["method"], scope["path"], self.settings.retry_after_s)
            if response is None:
                raise
            refusal = _REFUSALS.get(type(exc))
            if refusal is not None:
                self.metrics.idempotency.labels(refusal).inc()
            await response(scope, receive, send)
            return
        messages = held.messages
        if outcome is Outcome.REPLAYED:
            status = messages[0]["status"]
            self.metrics.idempotency.labels("replayed").inc()
            log.info(
                "replayed the first answer (status %d) to %s %s",
                status,
                scope["method"],
                scope["path"],
                extra={"idempotency_key": key, "replayed": True, "status": status},
            )
            messages = held.replayed()
        for message in messages:
            await send(message)

    def _route(self, scope: Scope) -> BaseRoute | None:
        """The write route of the request, if any; looked up once per method and path."""
        at = (scope["method"], scope["path"])
        if at not in self._routes:
            if len(self._routes) >= _ROUTES_KEPT:
                self._routes.clear()
            self._routes[at] = next(
                (r for r in self.writes if r.matches(scope)[0] is Match.FULL), None
            )
        return self._routes[at]


async def _body(receive: Receive) -> bytes:
    """The request body (the Gate has read it, and hands it over whole)."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)
