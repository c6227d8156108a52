"""Backlog files: markdown checklists and JSON lists, parsed and ticked."""

from __future__ import annotations

import hashlib
import json

import pytest

from orchestrator.domain.errors import OrchestratorError
from orchestrator.stages.backlog_file import BacklogError, BacklogItem, parse_backlog, tick


def title_id(title: str) -> str:
    return "B" + hashlib.sha256(title.encode()).hexdigest()[:8]


def by_title(items: list[BacklogItem]) -> dict[str, BacklogItem]:
    return {item.title: item for item in items}


def assert_only_line_changed(before: str, after: str, index: int, expected: str) -> None:
    """Every line (with its ending) the same but line ``index``, which became ``expected``."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    for number, (a, b) in enumerate(zip(old, new, strict=True)):
        assert b == (expected if number == index else a), f"line {number}"


MARKDOWN = """\
# Backlog

Some notes that are not items.

- [ ] Add a square root
  Return NaN for negative input.

  Cover it with a test.
- [x] Add subtraction
* [X] Add multiplication
+ [ ] Add division
    Refuse a zero divisor.
1. [ ] Numbered one
2) [ ] Numbered two
- plain bullet, no box
-[ ] no space after the bullet
- [] no space in the box
- [ ]
"""


# -- markdown ----------------------------------------------------------------------


def test_markdown_items_in_order_with_state() -> None:
    items = parse_backlog(MARKDOWN, "BACKLOG.md")
    assert [(i.title, i.done) for i in items] == [
        ("Add a square root", False),
        ("Add subtraction", True),
        ("Add multiplication", True),
        ("Add division", False),
        ("Numbered one", False),
        ("Numbered two", False),
    ]


def test_markdown_bodies_are_dedented_and_stripped() -> None:
    items = by_title(parse_backlog(MARKDOWN, "BACKLOG.md"))
    assert (
        items["Add a square root"].body == "Return NaN for negative input.\n\nCover it with a test."
    )
    assert items["Add division"].body == "Refuse a zero divisor."
    assert items["Add subtraction"].body == ""


def test_markdown_ids_come_from_the_normalised_title() -> None:
    items = by_title(parse_backlog(MARKDOWN, "BACKLOG.md"))
    assert items["Add a square root"].id == title_id("add a square root")
    spaced = parse_backlog("- [ ]   ADD  a\tSquare root  \n", "BACKLOG.md")
    assert spaced[0].id == items["Add a square root"].id


def test_markdown_ids_hold_when_other_items_change() -> None:
    before = {i.title: i.id for i in parse_backlog(MARKDOWN, "BACKLOG.md")}
    edited = "- [ ] A new first item\n" + MARKDOWN.replace("- [x] Add subtraction\n", "")
    after = {i.title: i.id for i in parse_backlog(edited, "BACKLOG.md")}
    assert all(after[title] == before[title] for title in after if title in before)


def test_markdown_nesting() -> None:
    text = (
        "- [ ] Parent\n"
        "  parent text\n"
        "  - [ ] Child\n"
        "    child text\n"
        "    - a plain sub-bullet\n"
        "  more parent text\n"
        "    - [x] Grandchild-ish\n"
        "Top-level prose ends every item.\n"
        "  not anyone's body\n"
    )
    items = by_title(parse_backlog(text, "todo.md"))
    assert list(items) == ["Parent", "Child", "Grandchild-ish"]
    assert items["Parent"].body == "parent text\nmore parent text"
    assert items["Child"].body == "child text\n- a plain sub-bullet"
    assert items["Grandchild-ish"].done
    assert items["Grandchild-ish"].body == ""


def test_markdown_items_at_any_indentation_and_with_tabs() -> None:
    text = "   - [ ] Indented\n\t- [x] Tabbed\n\t\tTab body\n"
    items = by_title(parse_backlog(text, "todo.md"))
    assert items["Indented"].done is False
    assert items["Tabbed"].done is True
    assert items["Tabbed"].body == "Tab body"


def test_markdown_fenced_code_holds_no_items() -> None:
    text = (
        "- [ ] Real\n  ```\n  - [ ] in a fence\n  ```\n~~~\n- [ ] also fenced\n~~~\n- [ ] After\n"
    )
    items = parse_backlog(text, "todo.md")
    assert [i.title for i in items] == ["Real", "After"]
    assert items[0].body == "```\n- [ ] in a fence\n```"


def test_markdown_duplicate_titles_get_suffixes_in_order() -> None:
    text = "- [ ] Fix it\n- [x] Other\n- [ ] fix   IT\n- [ ] Fix it\n"
    ids = [i.id for i in parse_backlog(text, "todo.md")]
    base = title_id("fix it")
    assert ids == [base, title_id("other"), base + "-2", base + "-3"]
    assert len(set(ids)) == 4


def test_markdown_crlf() -> None:
    text = MARKDOWN.replace("\n", "\r\n")
    items = parse_backlog(text, "BACKLOG.md")
    assert items == parse_backlog(MARKDOWN, "BACKLOG.md")
    ticked = tick(text, "BACKLOG.md", items[0].id)
    assert_only_line_changed(text, ticked, 4, "- [x] Add a square root\r\n")
    assert ticked.count("\r\n") == text.count("\r\n")
    assert "\n" not in ticked.replace("\r\n", "")


def test_tick_changes_one_character() -> None:
    items = parse_backlog(MARKDOWN, "BACKLOG.md")
    ticked = tick(MARKDOWN, "BACKLOG.md", by_title(items)["Add division"].id)
    assert_only_line_changed(MARKDOWN, ticked, 10, "+ [x] Add division\n")
    assert len(ticked) == len(MARKDOWN)
    assert by_title(parse_backlog(ticked, "BACKLOG.md"))["Add division"].done


@pytest.mark.parametrize("title", ["Numbered one", "Numbered two"])
def test_tick_numbered_items(title: str) -> None:
    item = by_title(parse_backlog(MARKDOWN, "BACKLOG.md"))[title]
    ticked = tick(MARKDOWN, "BACKLOG.md", item.id)
    changed = [
        (a, b)
        for a, b in zip(MARKDOWN.splitlines(True), ticked.splitlines(True), strict=True)
        if a != b
    ]
    assert len(changed) == 1
    assert changed[0][1] == changed[0][0].replace("[ ]", "[x]", 1)


def test_tick_keeps_odd_spacing_and_missing_final_newline() -> None:
    text = "intro\n\t  *   [ ]   Spaced   out  \n- [ ] Last, no newline"
    first, last = parse_backlog(text, "todo.md")
    assert first.title == "Spaced   out"
    assert tick(text, "todo.md", first.id) == text.replace("[ ]", "[x]", 1)
    assert (
        tick(text, "todo.md", last.id)
        == "intro\n\t  *   [ ]   Spaced   out  \n- [x] Last, no newline"
    )


def test_tick_a_duplicate_ticks_that_one() -> None:
    text = "- [ ] Fix it\n- [ ] Fix it\n"
    second = parse_backlog(text, "todo.md")[1]
    assert tick(text, "todo.md", second.id) == "- [ ] Fix it\n- [x] Fix it\n"


def test_tick_with_a_byte_order_mark() -> None:
    text = "\ufeff- [ ] First\r\n- [ ] Second\r\n"
    first = parse_backlog(text, "todo.md")[0]
    assert first.title == "First"
    assert tick(text, "todo.md", first.id) == "\ufeff- [x] First\r\n- [ ] Second\r\n"


def test_tick_a_done_item_is_a_no_op() -> None:
    items = by_title(parse_backlog(MARKDOWN, "BACKLOG.md"))
    for title in ("Add subtraction", "Add multiplication"):
        assert tick(MARKDOWN, "BACKLOG.md", items[title].id) == MARKDOWN


def test_tick_unknown_id_names_the_file_and_id() -> None:
    with pytest.raises(BacklogError, match=r"docs/BACKLOG\.md: no backlog item with id 'Bnope'"):
        tick(MARKDOWN, "docs/BACKLOG.md", "Bnope")
    with pytest.raises(BacklogError, match="has no items"):
        tick("nothing here\n", "todo.md", "B1")


def test_backlog_error_is_an_orchestrator_error() -> None:
    assert issubclass(BacklogError, OrchestratorError)
    assert BacklogError.__bases__ == (OrchestratorError,)


def test_empty_files_have_no_items() -> None:
    assert parse_backlog("", "BACKLOG.md") == []
    assert parse_backlog("[]", "backlog.json") == []


# -- JSON --------------------------------------------------------------------------

JSON_TEXT = json.dumps(
    [
        "Add a square root",
        {"title": "Add subtraction", "done": True},
        {"title": "Add division", "description": "Refuse a zero divisor.", "id": 7},
        {"title": "Add modulo", "body": "  Like Python's %.  ", "id": "mod"},
        {"title": "Add a square root"},
    ],
    indent=4,
)


def test_json_items() -> None:
    items = parse_backlog(JSON_TEXT, "backlog.json")
    base = title_id("add a square root")
    assert items == [
        BacklogItem(id=base, title="Add a square root", body="", done=False),
        BacklogItem(id=title_id("add subtraction"), title="Add subtraction", body="", done=True),
        BacklogItem(id="7", title="Add division", body="Refuse a zero divisor.", done=False),
        BacklogItem(id="mod", title="Add modulo", body="Like Python's %.", done=False),
        BacklogItem(id=base + "-2", title="Add a square root", body="", done=False),
    ]


def test_json_and_markdown_ids_agree() -> None:
    md = parse_backlog("- [ ] Add a square root\n", "BACKLOG.md")
    js = parse_backlog('["Add a square root"]', "backlog.json")
    assert md[0].id == js[0].id


def test_json_tick_an_object_and_a_string() -> None:
    ticked = tick(JSON_TEXT, "backlog.json", "7")
    assert ticked.endswith("]\n")
    data = json.loads(ticked)
    assert data[2] == {
        "title": "Add division",
        "description": "Refuse a zero divisor.",
        "id": 7,
        "done": True,
    }
    base = title_id("add a square root")
    again = json.loads(tick(ticked, "backlog.json", base))
    assert again[0] == {"title": "Add a square root", "done": True}
    assert again[4] == {"title": "Add a square root"}  # the duplicate is its own item
    assert (
        tick(ticked, "backlog.json", base) == json.dumps(again, indent=2, ensure_ascii=False) + "\n"
    )


def test_json_tick_keeps_non_ascii() -> None:
    text = '[{"title": "Grüße zurückgeben"}]'
    item = parse_backlog(text, "b.json")[0]
    assert "Grüße" in tick(text, "b.json", item.id)


def test_json_tick_a_done_item_is_a_no_op() -> None:
    done = title_id("add subtraction")
    assert tick(JSON_TEXT, "backlog.json", done) == JSON_TEXT


def test_json_tick_unknown_id() -> None:
    with pytest.raises(BacklogError, match=r"backlog\.json: no backlog item with id '8'"):
        tick(JSON_TEXT, "backlog.json", "8")


def test_json_given_id_does_not_collide_with_a_generated_one() -> None:
    taken = title_id("fix it")
    text = json.dumps(["Fix it", {"title": "Other", "id": taken + "-2"}, "Fix it"])
    ids = [i.id for i in parse_backlog(text, "b.json")]
    assert ids == [taken, taken + "-2", taken + "-3"]


def test_json_format_picked_by_extension_only() -> None:
    assert parse_backlog('["A"]', "Backlog.JSON")[0].title == "A"
    assert parse_backlog('["A"]', "backlog.md") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n  "A",\n  "B"\n  "C"\n]', r"b\.json: invalid JSON at line 4, column 3: Expecting ','"),
        ('{"title": "A"}', r"b\.json: the top level is a JSON object, not a list"),
        ('["A", "B", {"description": "no title"}]', r"b\.json: item 3 has no title"),
        ('["A", {"title": "  "}]', r"b\.json: item 2 has no title"),
        ('["A", ""]', r"b\.json: item 2 has no title"),
        ('["A", 5]', r"b\.json: item 2 is a JSON number, not a string or an object"),
        ('[{"title": "A", "id": 1}, {"title": "B", "id": "1"}]', r"items 1 and 2 both have id '1'"),
        ('[{"title": "A", "id": true}]', r'item 1: "id" is a JSON boolean'),
        ('[{"title": "A", "done": "yes"}]', r'item 1: "done" is a JSON string'),
        ('[{"title": "A", "body": ["x"]}]', r"item 1: its description is a JSON array"),
    ],
)
def test_json_errors(text: str, message: str) -> None:
    with pytest.raises(BacklogError, match=message) as caught:
        parse_backlog(text, "b.json")
    assert "\n" not in str(caught.value)
    with pytest.raises(BacklogError, match=message):
        tick(text, "b.json", "B00000000")


def test_json_nulls_count_as_left_out() -> None:
    text = '[{"title": "A", "description": null, "done": null, "id": null}]'
    assert parse_backlog(text, "b.json") == [
        BacklogItem(id=title_id("a"), title="A", body="", done=False)
    ]
