"""The documentation tells the truth: its walkthroughs replay, and its relative links resolve.

A step of a walkthrough is a ```sh block holding one `curl -si` command, followed at once by
an ```http block with the answer: the status line, the headers that matter, a blank line and
the body (pretty-printed or not). `<!-- replay -->` starts a walkthrough on a fresh, migrated
SQLite database; `<!-- replay RESTOCK_API_KEYS=… -->` also sets the service's settings. Its
steps run in document order until the next marker. Every curl command in README.md and
docs/*.md must be such a step.

A documented body must equal the answer, except for the values the server makes afresh on
each run (the keys in RUN_VALUES) and a documented "…", which match any value of the same
JSON type. A text body (such as /metrics) must contain each documented line.
"""

import asyncio
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from httpx import ASGITransport, AsyncClient

from restock_service.api import create_app
from restock_service.cli import migrate
from restock_service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BASE_URL = "http://127.0.0.1:8000"  # where `make run` serves

# Timestamps and ids the server sets. `executed_at` is the caller's, so it is compared.
RUN_VALUES = frozenset(
    {
        "at",
        "changed_at",
        "completed_at",
        "created_at",
        "id",
        "next_cursor",
        "recorded_at",
        "requested_at",
        "resolved_at",
        "updated_at",
    }
)
ANY = "…"

_MARKER = re.compile(r"^<!--\s*replay\b(?P<settings>.*?)-->\s*$")
_STATUS_LINE = re.compile(r"^HTTP/1\.1 (?P<status>\d{3})(?: .*)?$")


@dataclass
class Block:
    lang: str
    text: str
    line: int


@dataclass
class Step:
    where: str
    command: str
    answer: str


@dataclass
class Walkthrough:
    where: str
    settings: dict[str, str]
    steps: list[Step] = field(default_factory=list)


@dataclass
class Call:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _blocks_and_markers(path: Path) -> list[Block | tuple[int, dict[str, str]]]:
    """The fenced blocks and replay markers of a Markdown file, in order."""
    items: list[Block | tuple[int, dict[str, str]]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            start, lang, body = i + 1, line[3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            items.append(Block(lang, "\n".join(body), start))
        elif marker := _MARKER.match(line):
            settings = {}
            for word in shlex.split(marker["settings"]):
                name, sep, value = word.partition("=")
                assert sep and name.startswith("RESTOCK_"), f"{path.name}:{i + 1}: {word!r}"
                settings[name.removeprefix("RESTOCK_").lower()] = value
            items.append((i + 1, settings))
        i += 1
    return items


def walkthroughs() -> tuple[list[Walkthrough], list[str]]:
    """Every walkthrough of the documents, and the curl commands that are in none."""
    found: list[Walkthrough] = []
    problems: list[str] = []
    for path in DOCUMENTS:
        current: Walkthrough | None = None
        items = _blocks_and_markers(path)
        for n, item in enumerate(items):
            if isinstance(item, tuple):
                current = Walkthrough(f"{_name(path)}:{item[0]}", item[1])
                found.append(current)
                continue
            where = f"{_name(path)}:{item.line}"
            previous = items[n - 1] if n else None
            if item.lang == "http" and not (isinstance(previous, Block) and previous.lang == "sh"):
                problems.append(f"{where}: an answer without a curl command just before it")
            if item.lang != "sh" or not re.search(r"^\s*curl\b", item.text, re.M):
                continue
            answer = items[n + 1] if n + 1 < len(items) else None
            if not (isinstance(answer, Block) and answer.lang == "http"):
                problems.append(f"{where}: a curl command without an ```http answer after it")
            elif current is None:
                problems.append(f"{where}: a curl command before any <!-- replay -->")
            else:
                current.steps.append(Step(where, item.text, answer.text))
    return found, problems


def parse_curl(command: str) -> Call:
    """The request a documented `curl` command sends (only the options the docs use)."""
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:1] == ["curl"], f"not one curl command: {command!r}"
    method, url, body = None, None, None
    headers: list[tuple[str, str]] = []
    flags: set[str] = set()
    rest = iter(words[1:])
    for word in rest:
        if word in {"-X", "--request"}:
            method = next(rest)
        elif word in {"-H", "--header"}:
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif word in {"-d", "--data", "--data-raw"}:
            data = next(rest)
            assert word == "--data-raw" or not data.startswith("@"), "bodies are inline"
            body = data.encode()
        elif re.fullmatch(r"-[si]+", word):
            flags.update(word[1:])
        else:
            assert not word.startswith("-"), f"an option the replay does not know: {word}"
            assert url is None, f"two URLs in {command!r}"
            url = word
    assert url is not None and url.startswith(BASE_URL + "/"), f"{url!r} is not on {BASE_URL}"
    assert flags >= {"s", "i"}, "use `curl -si`, so that the output shows the status"
    if body is not None and not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))  # as curl does
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return Call(method or ("POST" if body is not None else "GET"), target, headers, body)


def _mismatches(documented: Any, actual: Any, path: str = "$") -> list[str]:
    key = path.rsplit(".", 1)[-1]
    if documented == ANY or key in RUN_VALUES:
        if documented != ANY and type(documented) is not type(actual):
            return [f"{path}: documented {documented!r}, answered {actual!r}"]
        return []
    if isinstance(documented, dict) and isinstance(actual, dict):
        problems = [f"{path}.{k}: documented but not answered" for k in documented.keys() - actual]
        problems += [f"{path}.{k}: answered but not documented" for k in actual.keys() - documented]
        for k in documented.keys() & actual.keys():
            problems += _mismatches(documented[k], actual[k], f"{path}.{k}")
        return problems
    if isinstance(documented, list) and isinstance(actual, list):
        if len(documented) != len(actual):
            return [f"{path}: documented {len(documented)} items, answered {len(actual)}"]
        problems = []
        for n, (d, a) in enumerate(zip(documented, actual, strict=True)):
            problems += _mismatches(d, a, f"{path}[{n}]")
        return problems
    if documented != actual or type(documented) is not type(actual):
        return [f"{path}: documented {documented!r}, answered {actual!r}"]
    return []


def answer_mismatches(answer: str, call: Call, response: httpx.Response) -> list[str]:
    """How a response differs from its documented answer (nothing: they agree)."""
    head, _, body = answer.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    status = _STATUS_LINE.match(status_line)
    assert status, f"the answer must start with a status line: {status_line!r}"
    problems = []
    if int(status["status"]) != response.status_code:
        problems.append(f"status: documented {status['status']}, answered {response.status_code}")
    sent = {name.lower() for name, _ in call.headers}
    for line in header_lines:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        answered = response.headers.get(name)
        # A request id the server made differs on every run; one the caller sent comes back.
        varies = value == ANY or (name == "x-request-id" and name not in sent)
        if answered is None:
            problems.append(f"header {name}: documented but not answered")
        elif answered != value and not varies:
            problems.append(f"header {name}: documented {value!r}, answered {answered!r}")
    if not body.strip():
        if response.content:
            problems.append(f"body: documented none, answered {response.text!r}")
    elif "json" in response.headers.get("content-type", ""):
        problems += _mismatches(json.loads(body), response.json())
    else:
        lines = set(response.text.splitlines())
        problems += [f"body: no line {line!r}" for line in body.splitlines() if line not in lines]
    return problems


def _as_documented(response: httpx.Response) -> str:
    """The answer in the documents' form, to show what to write when they differ."""
    lines = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
    lines.append(f"content-type: {response.headers.get('content-type')}")
    if "json" in response.headers.get("content-type", ""):
        lines += ["", json.dumps(response.json(), ensure_ascii=False, indent=2)]
    elif response.content:
        lines += ["", response.text[:2000]]
    return "\n".join(lines)


async def replay(walkthrough: Walkthrough, database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, **walkthrough.settings))
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url=BASE_URL) as client,
    ):
        for step in walkthrough.steps:
            call = parse_curl(step.command)
            response = await client.request(
                call.method, call.target, headers=call.headers, content=call.body
            )
            problems = answer_mismatches(step.answer, call, response)
            assert not problems, (
                f"{step.where}: the answer drifted from the document:\n  "
                + "\n  ".join(problems)
                + f"\n{call.method} {call.target} answered:\n{_as_documented(response)}"
            )


WALKTHROUGHS, UNREPLAYED = walkthroughs()


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS, ids=lambda w: w.where)
def test_documented_walkthrough_replays_with_the_documented_answers(
    walkthrough: Walkthrough, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'restock.db'}"
    migrate(Settings(database_url=url))
    asyncio.run(replay(walkthrough, url))


def test_every_documented_curl_is_a_replayed_step() -> None:
    assert not UNREPLAYED, "\n".join(UNREPLAYED)
    steps = {Path(w.where.split(":")[0]).name: 0 for w in WALKTHROUGHS}
    for w in WALKTHROUGHS:
        steps[Path(w.where.split(":")[0]).name] += len(w.steps)
    assert steps.get("README.md", 0) >= 3
    assert steps.get("api.md", 0) >= 25


def test_a_drifted_answer_is_caught() -> None:
    call = parse_curl("curl -si http://127.0.0.1:8000/health")
    response = httpx.Response(200, json={"status": "ok", "at": "2026-01-01T00:00:00Z"})
    ok = 'HTTP/1.1 200 OK\n\n{"status": "ok", "at": "2025-05-05T00:00:00Z"}'
    assert answer_mismatches(ok, call, response) == []
    assert answer_mismatches(ok.replace('"ok"', '"down"'), call, response)
    assert answer_mismatches(ok.replace("200", "503"), call, response)
    assert answer_mismatches(ok.replace('"2025-05-05T00:00:00Z"', "null"), call, response)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            slug, n = _slug(m[1]), 1
            while slug in anchors:
                slug, n = f"{_slug(m[1])}-{n}", n + 1
            anchors.add(slug)
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_every_relative_link_points_to_an_existing_file(path: Path) -> None:
    broken = []
    for link in _links(path):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        resolved = (path.parent / target).resolve() if target else path
        if not resolved.exists():
            broken.append(f"{link}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{link}: no such heading in {resolved.name}")
    assert not broken, f"{_name(path)}: " + "; ".join(broken)
