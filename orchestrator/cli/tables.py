"""Tables that fit the terminal: one line per row, whatever its width (80 columns and up).

A column is fixed (ids, statuses, times, numbers: shown whole) or flexible
(titles, reasons: given the width left over and cut with an ellipsis, never
folded). Optional columns are dropped, the least needed first, while the
flexible ones would get too narrow to read; ``--wide`` keeps them all. Columns are set
apart by two spaces, with no box, so a row is as wide as its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

GAP = 2  # spaces between two columns
MIN_FLEX = 20  # the narrowest a flexible column may be by default


@dataclass(frozen=True)
class Column:
    header: str
    flex: bool = False  # takes the width left over; its text is cut with an ellipsis
    right: bool = False  # numbers
    optional: int = 0  # dropped when the table would not fit, the highest first (0: always shown)
    cap: int = 0  # at most this wide, cut with an ellipsis (0: no cap)
    least: int = MIN_FLEX  # a flexible column narrower than this drops an optional column instead


def fit(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int,
        wide: bool = False) -> tuple[Table, int, list[str]]:
    """A table of ``rows`` (plain text cells) at most ``width`` columns wide unless ``wide``, its width,
    and the headers of the columns left out."""
    rows = [[" ".join(cell.split()) or "-" for cell in row] for row in rows]  # one line each
    keep = list(range(len(columns)))
    while True:
        widths = _widths([columns[i] for i in keep], [[row[i] for i in keep] for row in rows], width, wide)
        droppable = sorted((i for i in keep if columns[i].optional), key=lambda i: columns[i].optional)
        if wide or widths is not None or not droppable:
            break
        keep.remove(droppable[-1])
    if widths is None:  # even the required columns do not fit: flexible ones get the minimum
        widths = _natural([columns[i] for i in keep], [[row[i] for i in keep] for row in rows], least=True)
    table = Table(title=title, box=None, pad_edge=False, padding=(0, GAP // 2), title_justify="left",
                  header_style="bold", show_edge=False)
    for i, w in zip(keep, widths, strict=True):
        column = columns[i]
        table.add_column(column.header, width=w, no_wrap=True, overflow="ellipsis",
                         justify="right" if column.right else "left")
    for row in rows:
        table.add_row(*(Text(row[i]) for i in keep))
    return table, sum(widths) + GAP * (len(keep) - 1), [c.header for i, c in enumerate(columns) if i not in keep]


def _natural(columns: Sequence[Column], rows: Sequence[Sequence[str]], least: bool = False) -> list[int]:
    """Each column's widest cell (or header), within its cap; the flexible ones at their least if ``least``."""
    widths = []
    for n, column in enumerate(columns):
        longest = max([len(column.header), *(len(r[n]) for r in rows)])
        if column.cap:
            longest = min(longest, max(column.cap, len(column.header)))
        if column.flex and least:
            longest = min(longest, max(column.least, len(column.header)))
        widths.append(longest)
    return widths


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int, wide: bool) -> list[int] | None:
    """Each column's width within ``width``; None when the flexible columns would be too narrow."""
    natural = _natural(columns, rows)
    if wide:
        return natural
    fixed = sum(w for c, w in zip(columns, natural, strict=True) if not c.flex)
    room = width - fixed - GAP * (len(columns) - 1)
    flexible = sorted((w, n) for n, (c, w) in enumerate(zip(columns, natural, strict=True)) if c.flex)
    widths = list(natural)
    # The narrowest flexible columns take what they need; the others share what is left.
    for left, (want, n) in zip(range(len(flexible), 0, -1), flexible, strict=True):
        share = max(room, 0) // left
        widths[n] = min(want, share)
        if widths[n] < min(want, columns[n].least):
            return None
        room -= widths[n]
    return widths if room >= 0 else None


def short_time(iso: str | None, now: datetime | None = None) -> str:
    """``03:56`` today, ``12-01 03:56`` this year, ``2025-12-01 03:56`` before (UTC); ``-`` for none."""
    if not iso:
        return "-"
    when = datetime.fromisoformat(iso).astimezone(UTC)
    today = (now or datetime.now(UTC)).astimezone(UTC)
    if when.date() == today.date():
        return when.strftime("%H:%M")
    return when.strftime("%m-%d %H:%M" if when.year == today.year else "%Y-%m-%d %H:%M")
