"""SQL statements kept in ``store/sql/*.sql``, written with named parameters (``:order_nos``).

This is the one place where ``:name`` becomes the driver's ``$n``: a statement is read once,
its names are numbered in order of first appearance, and ``args`` lays a call's keyword
arguments out in that order. A cast (``::text``) is not a parameter. Comments (``--``) are for
the reader and are not sent. A file may pull in a shared part with a line
``-- include: NAME.sql``.

``make sql`` writes what each statement sends, in each variant, to ``sent/`` for review;
tests/test_statements.py fails when those files are not current.

A write statement can also run **keyed** (idempotency.py): in the one statement, it takes the
caller's idempotency key and keeps its own rows under it as the key's receipt. It fails, its
effect undone, when the key is not its to take: with SQLSTATE RK409
(``idempotency_key_held_if``, migration 0007) while another request with the key is in its
write, and with a unique violation on ``pk_idempotency_keys`` when a row holds the key (the
store then asks ``idempotency.state_of`` whether that row still counts). Its file marks two
places:

- ``{key_gate}`` in each row source of its writes, so that the key's advisory lock is taken
  before anything is written: ``true`` unkeyed; keyed, the statement fails unless it gets
  the lock (a second request with the key, in flight, does not);
- a line ``-- rows`` (or ``-- rows kept when: CONDITION``, for a statement that writes
  only under CONDITION) before its final SELECT, whose rows the receipt keeps.
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
_ROWS = re.compile(r"^-- rows(?: kept when: (.+))?$", re.MULTILINE)
_WITH = re.compile(r"^WITH ", re.MULTILINE)
GATE = "{key_gate}"
# The advisory lock of a caller's key at a merchant, held by the keyed statement at work.
KEY_LOCK = "hashtextextended(:merchant || ' ' || :key_owner || ' ' || :key, 0)"
_KEYED_HEAD = f"""WITH key_gate AS MATERIALIZED (
  SELECT idempotency_key_held_if(NOT pg_try_advisory_xact_lock({KEY_LOCK})) AS ok
), """
_KEYED_TAIL = """, key_rows AS MATERIALIZED (
{rows}
), key_kept AS (
  INSERT INTO idempotency_keys
    (merchant_id, owner, key, fingerprint, created_at, expires_at, receipt)
  SELECT :merchant, :key_owner, :key, :key_fingerprint, :now, :key_expires_at,
         convert_to(:key_receipt_head::text
                    || coalesce((SELECT json_agg(r)::text FROM key_rows r), '[]') || ']',
                    'UTF8')
  WHERE (SELECT ok FROM key_gate) AND ({wrote})
)
SELECT * FROM key_rows"""


@dataclass(frozen=True, slots=True)
class Statement:
    name: str
    text: str  # with $1, $2, … in place of the names
    names: tuple[str, ...]  # the name of $1, $2, …
    writes: bool = False  # it has a keyed variant

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


def _variant(source: str, keyed: bool) -> tuple[str, bool]:
    """The statement as sent unkeyed or keyed, and whether it is a write statement."""
    marker = _ROWS.search(source)
    if marker is None:
        if keyed:
            raise ValueError("only a write statement (with a `-- rows` line) runs keyed")
        return source, False
    if not keyed:
        return source.replace(GATE, "true"), True
    head, rows = source[: marker.start()], source[marker.end() :]
    with_ = _WITH.search(head)
    if with_ is None:
        raise ValueError("a write statement begins with WITH")
    gate = "(SELECT ok FROM key_gate)"
    ctes, rows = head[with_.end() :].replace(GATE, gate), rows.replace(GATE, gate)
    wrote = marker.group(1) or "true"
    return _KEYED_HEAD + ctes.rstrip() + _KEYED_TAIL.format(rows=rows.strip(), wrote=wrote), True


@cache
def statement(name: str, *, keyed: bool = False) -> Statement:
    """The statement in ``sql/NAME.sql``, its named parameters numbered; ``keyed``, the
    variant that takes an idempotency key (a write statement's only)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    source, writes = _variant(_source(f"{name}.sql"), keyed)
    text = _NAME.sub(number, _COMMENT.sub("", source).strip())
    return Statement(name, text, tuple(names), writes)


SENT_DIR = Path(__file__).with_name("sent")


def names() -> list[str]:
    """Every statement in ``sql/``: each file but those only included by others."""
    files = {path.stem: path.read_text() for path in SQL_DIR.glob("*.sql")}
    included = {m.removesuffix(".sql") for text in files.values() for m in _INCLUDE.findall(text)}
    return sorted(set(files) - included)


def sent() -> dict[str, str]:
    """What each variant of each statement sends, by file name: ``NAME.sql``, and
    ``NAME.keyed.sql`` for a write statement, each under a line naming its parameters."""
    variants: dict[str, str] = {}
    for name in names():
        for keyed in (False, True):
            if keyed and not statement(name).writes:
                continue
            query = statement(name, keyed=keyed)
            numbered = ", ".join(f"${i} {n}" for i, n in enumerate(query.names, 1))
            file = f"{name}.keyed.sql" if keyed else f"{name}.sql"
            variants[file] = f"-- {numbered or 'no parameters'}\n{query.text}\n"
    return variants


if __name__ == "__main__":  # `make sql`: write what runs, for review
    SENT_DIR.mkdir(exist_ok=True)
    for stale in SENT_DIR.glob("*.sql"):
        stale.unlink()
    for file, text in sent().items():
        (SENT_DIR / file).write_text(text)
