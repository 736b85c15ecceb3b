"""The receipt of a keyed write on PostgreSQL: the rows of each statement the write ran, in
order, as one JSON array of arrays of row objects.

The write's own statement keeps it (statements.py): the rows of the statements before it come
in as the array's beginning (``head_of``), and it appends its own with ``json_agg``. A replay
reads the rows back (``Receipt.rows``) as asyncpg would have returned them, the statement's
column types telling which JSON strings are timestamps.
"""

import json
from collections.abc import Iterable, KeysView, Mapping, Sequence
from datetime import datetime
from typing import Any

_TIMESTAMPS = frozenset({"timestamptz", "timestamp"})


def head_of(statements: Iterable[Sequence[Mapping[str, Any]]]) -> str:
    """The receipt's text up to the next statement's rows: ``[`` and each earlier
    statement's rows followed by a comma."""
    return "[" + "".join(
        json.dumps([dict(row.items()) for row in rows], default=_text, ensure_ascii=False) + ","
        for rows in statements
    )


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a receipt cannot keep {type(value).__name__}")


class Row(tuple[Any, ...]):
    """A row read back from a receipt, read as an asyncpg Record is: by position or by name,
    and as a mapping (``dict(row)``, ``**row``)."""

    _index: dict[str, int]

    def __new__(cls, index: dict[str, int], values: Iterable[Any]) -> "Row":
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._index[key])
        return super().__getitem__(key)

    def keys(self) -> KeysView[str]:
        return self._index.keys()

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._index, self, strict=True))


class Receipt:
    def __init__(self, data: bytes) -> None:
        self.statements: list[list[dict[str, Any]]] = json.loads(data)

    def rows(self, position: int, columns: Sequence[tuple[str, str]]) -> list[Row]:
        """The rows of the receipt's ``position``-th statement, whose result has ``columns``
        (name, PostgreSQL type name)."""
        index = {name: i for i, (name, _) in enumerate(columns)}
        stamps = [name for name, type_name in columns if type_name in _TIMESTAMPS]
        rows = []
        for kept in self.statements[position]:
            for name in stamps:
                if kept[name] is not None:
                    kept[name] = datetime.fromisoformat(kept[name])
            rows.append(Row(index, (kept[name] for name, _ in columns)))
        return rows
