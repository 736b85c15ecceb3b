"""SQL statements kept in ``store/sql/*.sql``, written with named parameters (``:order_nos``).

This is the one place where ``:name`` becomes the driver's ``$n``: a statement is read once,
its names are numbered in order of first appearance, and ``args`` lays a call's keyword
arguments out in that order. A cast (``::text``) is not a parameter. Comments (``--``) are for
the reader and are not sent. A file may pull in a shared part with a line
``-- include: NAME.sql``.
"""

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SQL_DIR = Path(__file__).with_name("sql")
_NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_INCLUDE = re.compile(r"^-- include: (\S+\.sql)$", re.MULTILINE)
_COMMENT = re.compile(r"\s*--[^\n]*")


@dataclass(frozen=True, slots=True)
class Statement:
    name: str
    text: str  # with $1, $2, … in place of the names
    names: tuple[str, ...]  # the name of $1, $2, …

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The values of ``params`` in positional order; every name must be given, once."""
        unknown = params.keys() - set(self.names)
        missing = set(self.names) - params.keys()
        if unknown or missing:
            raise TypeError(f"{self.name}: unknown {sorted(unknown)}, missing {sorted(missing)}")
        return [params[name] for name in self.names]


def _source(file: str) -> str:
    text = (SQL_DIR / file).read_text()
    return _INCLUDE.sub(lambda m: _source(m.group(1)).strip(), text)


@cache
def statement(name: str) -> Statement:
    """The statement in ``sql/NAME.sql``, its named parameters numbered."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = _NAME.sub(number, _COMMENT.sub("", _source(f"{name}.sql")).strip())
    return Statement(name, text, tuple(names))
