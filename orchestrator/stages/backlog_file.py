"""A project's backlog file: a markdown checklist or a JSON list.

Pure functions over the file's text; the caller reads and writes the file.
:func:`parse_backlog` gives the items with stable ids, :func:`tick` gives the
text with one item marked done and every other byte as it was, so a person's
edits and formatting survive the orchestrator's.

Markdown::

    - [ ] Add a square root
      Return NaN for negative input.
      depends: Add subtraction
    - [x] Add subtraction

JSON::

    ["Add a square root", {"title": "Add subtraction", "done": true, "id": 7, "depends_on": []}]

An item's ``depends:`` line (comma-separated) or JSON ``depends_on`` names
the items, by id or by title, whose tasks must merge before its own starts.

An item without an id of its own gets ``B`` and 8 hex digits from its title,
so the id holds as long as the title does; a repeated title gets ``-2``,
``-3``, ... in order of appearance.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.domain.errors import OrchestratorError


class BacklogError(OrchestratorError):
    """A backlog file cannot be read as one, or has no item with the id asked for."""


@dataclass(frozen=True)
class BacklogItem:
    """One entry of a backlog file."""

    id: str
    title: str
    body: str
    """Further lines of the item (markdown) or its description (JSON); may be empty."""
    done: bool
    depends_on: tuple[str, ...] = ()
    """Ids of the items it waits for (a name that is no item's id or title stays as written)."""


def parse_backlog(text: str, name: str) -> list[BacklogItem]:
    """The items of a backlog file, in file order.

    ``name`` is the file's path relative to the project: it picks the format
    (``.json`` is JSON, anything else markdown) and names the file in errors.
    """
    if _is_json(name):
        return [item for item, _ in _json_items(text, name)[1]]
    return [item for item, _ in _markdown_items(text)]


def tick(text: str, name: str, item_id: str) -> str:
    """The text with the item ``item_id`` marked done.

    Markdown changes one character (the space between the brackets); JSON is
    written again with two-space indents. An item already done gives the
    same text back; an unknown id is a :class:`BacklogError`.
    """
    if _is_json(name):
        return _tick_json(text, name, item_id)
    for item, mark_at in _markdown_items(text):
        if item.id == item_id:
            return text if item.done else text[:mark_at] + "x" + text[mark_at + 1 :]
    raise _unknown(name, item_id, [item for item, _ in _markdown_items(text)])


def _is_json(name: str) -> bool:
    return name.lower().endswith(".json")


def _unknown(name: str, item_id: str, items: list[BacklogItem]) -> BacklogError:
    known = ", ".join(item.id for item in items[:10]) + (", ..." if len(items) > 10 else "")
    return BacklogError(
        f"{name}: no backlog item with id {item_id!r}"
        + (f" (its ids: {known})" if items else " (it has no items)")
    )


# -- ids -------------------------------------------------------------------------


def _title_id(title: str) -> str:
    # Case and spacing do not change the id, so re-wrapping a title keeps it.
    norm = " ".join(title.lower().split())
    return "B" + hashlib.sha256(norm.encode()).hexdigest()[:8]


def _assign_ids(titles: list[str], given: list[str | None]) -> list[str]:
    """An id per item: the given one, else one from the title, made unique in order."""
    taken = {g for g in given if g is not None}
    seen: dict[str, int] = {}
    ids: list[str] = []
    for title, own in zip(titles, given, strict=True):
        if own is not None:
            ids.append(own)
            continue
        base = _title_id(title)
        count = seen.get(base, 0)
        candidate = base if count == 0 else f"{base}-{count + 1}"
        # A given id may already hold the generated one; take the next free suffix.
        while candidate in taken:
            count += 1
            candidate = f"{base}-{count + 1}"
        seen[base] = count + 1
        taken.add(candidate)
        ids.append(candidate)
    return ids


# -- markdown --------------------------------------------------------------------

# A task-list line: a bullet (-, *, +) or a number (1. or 1)), one space or
# more, a box, and a title. Matched against the line without its ending.
_ITEM = re.compile(
    r"(?P<indent>[ \t]*)(?:[-*+]|\d{1,9}[.)])[ \t]+\[(?P<mark>[ xX])\][ \t]+(?P<title>\S.*?)[ \t]*"
)
_FENCE = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})")


@dataclass
class _Open:
    """A markdown item whose body may still grow."""

    indent: int
    title: str
    done: bool
    mark_at: int
    body: list[str]


def _markdown_items(text: str) -> list[tuple[BacklogItem, int]]:
    """Each item with the offset in ``text`` of the character between its brackets."""
    found: list[_Open] = []
    stack: list[_Open] = []  # the items a deeper line would belong to, outermost first
    fence: str | None = None  # the fence that opened the code block we are in
    offset = 0
    for raw in text.split("\n"):
        start, offset = offset, offset + len(raw) + 1
        line = raw[:-1] if raw.endswith("\r") else raw
        if start == 0 and line.startswith("\ufeff"):  # a byte-order mark is not indentation
            line, start = line[1:], 1
        fence_match = _FENCE.match(line)
        if fence_match:
            mark = fence_match.group("fence")
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
        item = None if fence is not None or fence_match else _ITEM.fullmatch(line)
        if not line.strip():
            if stack:  # a blank line may sit between paragraphs of a body
                stack[-1].body.append("")
            continue
        indent = _width(line)
        while stack and stack[-1].indent >= indent:
            stack.pop()
        if item:
            entry = _Open(
                indent=indent,
                title=item.group("title"),
                done=item.group("mark") != " ",
                mark_at=start + item.start("mark"),
                body=[],
            )
            found.append(entry)
            stack.append(entry)
        elif stack:
            stack[-1].body.append(line)
    ids = _assign_ids([e.title for e in found], [None] * len(found))
    items = [BacklogItem(id=i, title=e.title, body=_body(e.body), done=e.done,
                         depends_on=tuple(_depends_line(e.body))) for i, e in zip(ids, found, strict=True)]
    return list(zip(_resolve_depends(items), [e.mark_at for e in found], strict=True))


_DEPENDS = re.compile(r"[ \t]*depends(?:[ \t]+on)?[ \t]*:[ \t]*(?P<names>.*)", re.IGNORECASE)


def _depends_line(body: list[str]) -> list[str]:
    """The names on an item's ``depends:`` lines."""
    names: list[str] = []
    for line in body:
        found = _DEPENDS.fullmatch(line)
        if found:
            names += [n.strip() for n in found.group("names").split(",") if n.strip()]
    return names


def _resolve_depends(items: list[BacklogItem]) -> list[BacklogItem]:
    """Each item with the names it depends on turned into item ids, where one matches."""
    by_title = {" ".join(item.title.lower().split()): item.id for item in items}
    ids = {item.id for item in items}

    def resolve(name: str) -> str:
        return name if name in ids else by_title.get(" ".join(name.lower().split()), name)

    return [replace(item, depends_on=tuple(resolve(n) for n in item.depends_on)) if item.depends_on else item
            for item in items]


def _width(line: str) -> int:
    """The indentation of a line, a tab reaching the next multiple of 4 as in CommonMark."""
    lead = line[: len(line) - len(line.lstrip(" \t"))]
    return len(lead.expandtabs(4))


def _body(lines: list[str]) -> str:
    return textwrap.dedent("\n".join(lines)).strip()


# -- JSON ------------------------------------------------------------------------


def _json_items(text: str, name: str) -> tuple[list[Any], list[tuple[BacklogItem, int]]]:
    """The parsed list, and each item with its index in that list."""
    try:
        data = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        raise BacklogError(
            f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, list):
        raise BacklogError(
            f"{name}: the top level is a JSON {_kind(data)}, not a list of backlog items"
        )
    titles: list[str] = []
    bodies: list[str] = []
    dones: list[bool] = []
    depends: list[list[str]] = []
    given: list[str | None] = []
    first_at: dict[str, int] = {}
    for number, entry in enumerate(data, start=1):
        title, body, done, own = _json_entry(entry, name, number)
        if own is not None:
            if own in first_at:
                raise BacklogError(
                    f"{name}: items {first_at[own]} and {number} both have id {own!r}; "
                    "ids must be unique"
                )
            first_at[own] = number
        titles.append(title)
        bodies.append(body)
        dones.append(done)
        depends.append(_json_depends(entry, name, number))
        given.append(own)
    ids = _assign_ids(titles, given)
    items = _resolve_depends([BacklogItem(id=ids[i], title=titles[i], body=bodies[i], done=dones[i],
                                          depends_on=tuple(depends[i])) for i in range(len(data))])
    return data, list(zip(items, range(len(data)), strict=True))


def _json_entry(entry: Any, name: str, number: int) -> tuple[str, str, bool, str | None]:
    """(title, body, done, given id) of one list entry; ``number`` is 1-based."""
    where = f"{name}: item {number}"
    if isinstance(entry, str):
        if not entry.strip():
            raise BacklogError(f"{where} has no title (it is an empty string)")
        return entry.strip(), "", False, None
    if not isinstance(entry, dict):
        raise BacklogError(f"{where} is a JSON {_kind(entry)}, not a string or an object")
    title = entry.get("title")
    if not isinstance(title, str) or not title.strip():
        raise BacklogError(f'{where} has no title (give it a non-empty "title" string)')
    # "description" matches the orchestrator's tasks, "body" the markdown items;
    # a null is taken as left out, as people writing JSON by hand mean it.
    body = next((entry[k] for k in ("description", "body") if entry.get(k) is not None), "")
    if not isinstance(body, str):
        raise BacklogError(f"{where}: its description is a JSON {_kind(body)}, not a string")
    done = False if entry.get("done") is None else entry["done"]
    if not isinstance(done, bool):
        raise BacklogError(f'{where}: "done" is a JSON {_kind(done)}, not true or false')
    own = entry.get("id")
    # bool is an int to Python, but an id of true is a mistake.
    if own is not None and (isinstance(own, bool) or not isinstance(own, str | int)):
        raise BacklogError(f'{where}: "id" is a JSON {_kind(own)}, not a string or an integer')
    if isinstance(own, str) and not own.strip():
        raise BacklogError(f'{where}: "id" is empty')
    return title.strip(), body.strip(), done, None if own is None else str(own)


def _json_depends(entry: Any, name: str, number: int) -> list[str]:
    """The names an entry's ``depends_on`` gives: one id or title, or a list of them."""
    value = entry.get("depends_on") if isinstance(entry, dict) else None
    if value is None:
        return []
    names = [value] if isinstance(value, str | int) and not isinstance(value, bool) else value
    if not isinstance(names, list) or any(isinstance(n, bool) or not isinstance(n, str | int) for n in names):
        raise BacklogError(f'{name}: item {number}: "depends_on" is a JSON {_kind(value)}, '
                           "not a list of item ids or titles")
    return [str(n).strip() for n in names if str(n).strip()]


def _tick_json(text: str, name: str, item_id: str) -> str:
    data, items = _json_items(text, name)
    for item, index in items:
        if item.id != item_id:
            continue
        if item.done:
            return text
        entry = data[index]
        if isinstance(entry, dict):
            entry["done"] = True
        else:
            data[index] = {"title": entry, "done": True}
        bom = "\ufeff" if text.startswith("\ufeff") else ""
        return bom + json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    raise _unknown(name, item_id, [item for item, _ in items])


def _kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
