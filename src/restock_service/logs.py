"""Logging for the CLI and every server worker: text or JSON, always with the request id."""

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# The record attributes each JSON line starts with, and the names it gives them; every other
# attribute that is not a standard one came from `extra=` and follows at the top level.
_JSON_FIELDS = ["asctime", "levelname", "name", "message", "request_id"]
_JSON_NAMES = {"asctime": "at", "levelname": "level", "name": "logger", "exc_info": "exception"}
# uvicorn's `color_message` repeats the message with terminal colours: not for a log store.
_NOT_LOGGED = [*RESERVED_ATTRS, "color_message"]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _JsonFormatter(JsonFormatter):
    """`at` in ISO 8601 with the UTC offset, rather than logging's local `asctime`."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat()


class _CallerlessLogger(logging.Logger):
    """A logger that does not look up the caller's file and line, which no format of ours shows.

    The lookup walks the stack on every record (the logging HOWTO's "Optimization" section);
    a record asked for with ``stack_info=True`` still gets its stack.
    """

    def findCaller(
        self, stack_info: bool = False, stacklevel: int = 1
    ) -> tuple[str, int, str, str | None]:
        if stack_info:
            return super().findCaller(stack_info, stacklevel + 1)  # +1: this frame
        return "(unknown file)", 0, "(unknown function)", None


def install_logger_class() -> None:
    """Make every logger created from now on skip the caller lookup.

    The package calls it on import, before any of its modules creates its logger; a logger
    created earlier (uvicorn's, when uvicorn is imported first) keeps the lookup.
    """
    logging.setLoggerClass(_CallerlessLogger)


def _json_formatter() -> logging.Formatter:
    """One JSON object per line, with the record's `extra=` fields at the top level."""
    return _JsonFormatter(
        _JSON_FIELDS,
        rename_fields=_JSON_NAMES,
        reserved_attrs=_NOT_LOGGED,
        json_ensure_ascii=False,
    )


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send every log record to stderr, once per process, at ``level``, as text or JSON."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_restock", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(_json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_RequestIdFilter())
    handler._restock = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # What no format of ours shows, so no record needs to collect it (the logging HOWTO's
    # "Optimization" section): thread and process names.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
