"""How this service reads a JSON body: UTF-8 (RFC 8259 §8.1), each key once in an object.

Both ways a request is answered (routing.ShortWay and FastAPI's handler) would otherwise
read such a body each in its own way: ``json.loads`` detects UTF-16 and UTF-32 from the
bytes and takes a byte-order mark, and both take the last of two equal keys, silently. The
Gate checks every JSON body here, once, before either sees it.
"""

import email.message
import json
from typing import Any

import jiter

from restock_service.errors import FieldProblem

NOT_UTF8 = FieldProblem(("body",), "is not valid UTF-8 JSON", type="json_invalid")


def is_json(content_type: str | None) -> bool:
    """FastAPI's test (strict_content_type): application/json or application/*+json, as the
    email package parses it (a malformed type counts as text/plain); none is not JSON."""
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def problem(body: bytes) -> FieldProblem | None:
    """What makes ``body`` unreadable as JSON of this service, if anything: not UTF-8, or a
    key given twice in one object. None for a body that is fine, and for malformed JSON,
    which the route's own parsing refuses with its usual answer."""
    try:
        jiter.from_json(body, catch_duplicate_keys=True, cache_mode=False)
        return None
    except ValueError:
        pass  # the rare case: find out why, in Python
    try:
        if json.detect_encoding(body) != "utf-8":
            return NOT_UTF8
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_Pairs)
    except UnicodeDecodeError:
        return NOT_UTF8
    except (ValueError, RecursionError):
        return None
    return _first_duplicate(document)


class _Pairs(list[tuple[str, Any]]):
    """An object as it was written, every key kept."""


def _first_duplicate(document: Any) -> FieldProblem | None:
    """The first key given twice in one object, named by its path (``orders[2].mall``)."""
    pending: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while pending:  # depth first, in document order; no recursion, however deep
        path, value = pending.pop()
        children: list[tuple[tuple[str | int, ...], Any]] = []
        if isinstance(value, _Pairs):
            seen: set[str] = set()
            for key, child in value:
                if key in seen:
                    return FieldProblem(
                        (*path, key),
                        "is given more than once in one object; send each key once",
                        type="json_duplicate_key",
                    )
                seen.add(key)
                children.append(((*path, key), child))
        elif isinstance(value, list):
            children = [((*path, index), child) for index, child in enumerate(value)]
        pending.extend(reversed(children))
    return None
