"""The client's models and the OpenAPI document agree: fails when they drift apart.

openapi/openapi.json is the service's contract, written from the app by `make openapi` (and
tests/test_schema.py keeps it current). Each answer model of the client must have its
schema's properties, no more and no fewer, required exactly where the schema requires them,
of the schema's types; each enum the schema's values; each body the client sends the
request schema's fields; and each call the client makes must exist with those schemas.
"""

import dataclasses
import json
import types
import typing
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from restock_client import (
    Code,
    Counts,
    FieldError,
    Line,
    Mall,
    OrderCancel,
    OrderOutcome,
    Outcome,
    Resolution,
    RestockBatch,
    RestockRecord,
    RestockStatus,
    StockLevel,
)
from restock_client.client import adjustment_body, restock_body
from restock_client.models import CALL

OPENAPI = Path(__file__).resolve().parents[3] / "openapi" / "openapi.json"

# Each model of the client and the schema it is written against.
MODELS: dict[type[Any], str] = {
    RestockBatch: "RestockBatchOut",
    Counts: "Counts",
    OrderOutcome: "RestockResultOut",
    Line: "LineOut",
    StockLevel: "StockOut",
    RestockRecord: "RestockRecordOut",
    Resolution: "Resolution",
    FieldError: "ProblemField",
    OrderCancel: "RestockOrderIn",
}
ENUMS: list[type[StrEnum]] = [Mall, Code, Outcome, RestockStatus]

# The calls the client makes: method, path, request body schema, 200 answer schema.
CALLS = [
    ("post", "/restocks", "RestockRequest", "RestockBatchOut"),
    ("post", "/stock/{sku}/adjustments", "AdjustmentIn", "StockOut"),
    ("get", "/restocks/{order_no}", None, "RestockRecordOut"),
]
WRITES = [(method, path) for method, path, body, _ in CALLS if body is not None]

# What of a property's schema says its type; titles, descriptions and limits are left out.
STRUCTURE = ("type", "format", "items", "$ref", "anyOf")


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    assert OPENAPI.is_file(), f"the OpenAPI document is missing: {OPENAPI}"
    document: dict[str, Any] = json.loads(OPENAPI.read_text(encoding="utf-8"))
    return document


def schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = openapi["components"]["schemas"]
    return found


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def structure(schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema down to what says its type."""
    kept: dict[str, Any] = {}
    for key in STRUCTURE:
        if key not in schema:
            continue
        value = schema[key]
        if key == "items":
            value = structure(value)
        elif key == "anyOf":
            value = [structure(v) for v in value]
        kept[key] = value
    return kept


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON schema, down to its type, that a field's annotation stands for."""
    if annotation is Any:
        return {}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is datetime:
        return {"type": "string", "format": "date-time"}
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return ref(annotation.__name__)
    if annotation in MODELS:
        return ref(MODELS[annotation])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list:
        return {"type": "array", "items": schema_of(args[0])}
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"anyOf": [schema_of(inner), {"type": "null"}]}
    raise AssertionError(f"no JSON schema for {annotation!r}")


def wire_fields(model: type[Any]) -> list[dataclasses.Field[Any]]:
    """The model's fields that the body carries (not those about the call)."""
    return [f for f in dataclasses.fields(model) if f.metadata != CALL]


def has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


@pytest.mark.parametrize(("model", "name"), MODELS.items(), ids=[m.__name__ for m in MODELS])
def test_each_model_has_its_schemas_fields(
    openapi: dict[str, Any], model: type[Any], name: str
) -> None:
    schema = schemas(openapi)[name]
    fields = wire_fields(model)
    assert sorted(f.name for f in fields) == sorted(schema["properties"]), (
        f"{model.__name__} and {name} have different fields"
    )
    assert sorted(f.name for f in fields if not has_default(f)) == sorted(schema["required"]), (
        f"{model.__name__}: the fields without a default must be {name}'s required ones"
    )
    hints = typing.get_type_hints(model)
    for f in fields:
        assert schema_of(hints[f.name]) == structure(schema["properties"][f.name]), (
            f"{model.__name__}.{f.name} is not of the type of {name}.{f.name}"
        )


@pytest.mark.parametrize("enum", ENUMS, ids=[e.__name__ for e in ENUMS])
def test_each_enum_has_its_schemas_values(openapi: dict[str, Any], enum: type[StrEnum]) -> None:
    assert [m.value for m in enum] == schemas(openapi)[enum.__name__]["enum"]


def test_every_schema_the_models_refer_to_is_modelled_or_an_enum(openapi: dict[str, Any]) -> None:
    """A new nested schema in an answer the client reads needs a model of its own."""
    known = set(MODELS.values()) | {e.__name__ for e in ENUMS}
    referred: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                referred.add(node["$ref"].rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for name in MODELS.values():
        walk(schemas(openapi)[name])
    assert referred <= known


def test_the_bodies_the_client_sends_have_the_request_schemas_fields(
    openapi: dict[str, Any],
) -> None:
    order = OrderCancel("354396-20260525-0036329794", False, "キャンセルできません")
    full = {
        "RestockRequest": restock_body(Mall.RAKUTEN, [order], True),
        "AdjustmentIn": adjustment_body(-2, "棚卸し", order.order_no),
    }
    minimal = {
        "RestockRequest": restock_body("yahoo", [], False),
        "AdjustmentIn": adjustment_body(1, "入荷", None),
    }
    for name, body in full.items():
        schema = schemas(openapi)[name]
        assert sorted(body) == sorted(schema["properties"]), name
        assert sorted(minimal[name]) == sorted(schema["required"]), name


def test_every_call_the_client_makes_exists_with_these_schemas(openapi: dict[str, Any]) -> None:
    for method, path, body, answer in CALLS:
        operation = openapi["paths"][path][method]
        if body is not None:
            assert operation["requestBody"]["content"]["application/json"]["schema"] == ref(body)
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == ref(answer), f"{method.upper()} {path}"
        problem = operation["responses"]["422"]["content"]["application/problem+json"]["schema"]
        assert problem == ref("Problem")


def test_the_writes_take_an_idempotency_key_and_the_problem_has_what_errors_read(
    openapi: dict[str, Any],
) -> None:
    for method, path in WRITES:
        operation = openapi["paths"][path][method]
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert "Idempotency-Key" in headers, f"{method.upper()} {path}"
        assert {"409", "503"} <= set(operation["responses"]), f"{method.upper()} {path}"
    problem = schemas(openapi)["Problem"]["properties"]
    assert {"detail", "errors"} <= set(problem)  # RestockError.detail and .errors
    assert problem["errors"]["anyOf"][0]["items"] == ref("ProblemField")
