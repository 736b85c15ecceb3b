"""The log lines: JSON fields and names, the request id in force, Japanese as written."""

import contextvars
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from restock_service import restock
from restock_service.logs import configure_logging, request_id_var
from restock_service.messages import MESSAGE, Code

log = restock.log  # created when restock.py was imported, as every module logger is


@pytest.fixture(autouse=True)
def _no_handler_left() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_restock", False)]:
        root.removeHandler(handler)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_json_line_has_the_fields_in_order_then_the_extra_fields_at_the_top_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    log.info("restock decision", extra={"order_no": "A-1", "code": Code.RESTORED, "count": 2})

    [line] = json_lines(capsys)
    assert list(line) == [
        "at",
        "level",
        "logger",
        "message",
        "request_id",
        "order_no",
        "code",
        "count",
    ]
    assert datetime.fromisoformat(line["at"]).utcoffset() == UTC.utcoffset(None)
    assert {k: v for k, v in line.items() if k != "at"} == {
        "level": "INFO",
        "logger": "restock_service.restock",
        "message": "restock decision",
        "request_id": "-",
        "order_no": "A-1",
        "code": "restored",
        "count": 2,
    }


def test_json_line_keeps_japanese_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    log.warning(MESSAGE[Code.RESTORED], extra={"note": MESSAGE[Code.PRODUCT_NOT_FOUND]})

    raw = capsys.readouterr().err
    assert MESSAGE[Code.RESTORED] in raw
    assert MESSAGE[Code.PRODUCT_NOT_FOUND] in raw
    assert "\\u" not in raw
    [line] = [json.loads(raw)]
    assert line["message"] == MESSAGE[Code.RESTORED]


def test_json_line_leaves_out_uvicorns_colour_copy_of_the_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]", 42, extra={"color_message": "\x1b[36m%d\x1b[0m"}
    )

    [line] = json_lines(capsys)
    assert "color_message" not in line
    assert line["message"] == "Started server process [42]"


def test_json_line_carries_the_exception_with_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    try:
        {}["missing"]
    except KeyError:
        log.exception("unexpected error")

    [line] = json_lines(capsys)
    assert line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("KeyError: 'missing'")


def test_each_record_carries_the_request_id_in_force_where_it_was_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")

    def handle(request_id: str) -> None:
        request_id_var.set(request_id)
        log.info("restock decision")

    contextvars.copy_context().run(handle, "req-1")
    contextvars.copy_context().run(handle, "req-2")
    log.info("outside any request")

    assert [line["request_id"] for line in json_lines(capsys)] == ["req-1", "req-2", "-"]


def test_text_line_is_time_level_logger_request_id_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "text")
    token = request_id_var.set("req-9")
    try:
        log.info(MESSAGE[Code.RESTORED], extra={"order_no": "A-1"})
    finally:
        request_id_var.reset(token)

    [line] = capsys.readouterr().err.splitlines()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO restock_service\.restock \[req-9\] "
        rf"{re.escape(MESSAGE[Code.RESTORED])}",
        line,
    )


def test_module_loggers_skip_the_caller_lookup_but_keep_a_stack_asked_for() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        log.warning("plain")
        log.warning("with its stack", stack_info=True)
    finally:
        log.removeHandler(handler)

    plain, stacked = records
    assert (plain.funcName, plain.lineno) == ("(unknown function)", 0)
    assert (
        stacked.funcName
        == test_module_loggers_skip_the_caller_lookup_but_keep_a_stack_asked_for.__name__
    )
    assert stacked.stack_info is not None
    assert stacked.stack_info.splitlines()[-1].strip() == (
        'log.warning("with its stack", stack_info=True)'
    )
