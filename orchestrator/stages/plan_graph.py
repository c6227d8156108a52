"""The order of a plan's tasks: what each depends on, cycles refused, prerequisites first.

The planner names a task's prerequisites by the title of another task of the
same plan or by the id of a task already in the store; a backlog item's
``depends:`` line adds the task of the item it names. Pure functions: the
plan stage gives the names and what the store knows, and gets ids back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PlanGraph:
    """What the tasks of one plan depend on, as task ids, and the order to take them in."""

    prerequisites: list[list[str]]
    """Per planned task, the ids of the tasks it waits for (of this plan or the store)."""
    refused: dict[int, str] = field(default_factory=dict)
    """Planned tasks that must not be added, by index: why."""
    order: list[int] = field(default_factory=list)
    """Every index, each after those of the plan it depends on, otherwise as planned."""


def _norm(title: str) -> str:
    return " ".join(title.lower().split())


def plan_graph(titles: list[str], names: list[list[str]], ids: list[str],
               known: Callable[[str], bool]) -> PlanGraph:
    """Resolve each planned task's ``names`` (titles of this plan, or task ids) to task ids.

    ``ids`` are the planned tasks' ids and ``known`` tells an id of the store.
    A name that is neither is refused, as is every task on a cycle of
    dependencies; the order lists prerequisites of the plan first.
    """
    by_title = {_norm(t): i for i, t in reversed(list(enumerate(titles)))}  # the first of a repeated title
    by_id = {task_id: i for i, task_id in enumerate(ids)}
    graph = PlanGraph(prerequisites=[[] for _ in titles])
    inner: list[list[int]] = [[] for _ in titles]  # prerequisites in this plan, by index
    for index, wanted in enumerate(names):
        for name in wanted:
            at = by_id.get(name, by_title.get(_norm(name)))
            if at is not None:
                inner[index].append(at)
                graph.prerequisites[index].append(ids[at])
            elif known(name):
                graph.prerequisites[index].append(name)
            else:
                graph.refused.setdefault(index, f"depends on {name!r}, which is no task of this plan or the store")
    for index, path in _cycles(inner).items():
        graph.refused.setdefault(index, "depends on itself: " + " -> ".join(repr(titles[i]) for i in path))
    graph.order = _order(inner)
    for index in graph.order:  # prerequisites first, so a refusal reaches every task after it
        refused = next((at for at in inner[index] if at in graph.refused), None)
        if refused is not None:
            graph.refused.setdefault(index, f"waits for {titles[refused]!r}, which was refused")
    return graph


def _cycles(inner: list[list[int]]) -> dict[int, list[int]]:
    """Each index on a cycle, with a path from it back to itself."""
    found: dict[int, list[int]] = {}
    for start in range(len(inner)):
        stack = [(start, [start])]
        seen: set[int] = set()
        while stack and start not in found:
            at, path = stack.pop()
            for following in inner[at]:
                if following == start:
                    found[start] = [*path, start]
                    break
                if following not in seen:
                    seen.add(following)
                    stack.append((following, [*path, following]))
    return found


def _order(inner: list[list[int]]) -> list[int]:
    """Indices with each after its prerequisites, otherwise in plan order (tasks on a cycle last)."""
    placed: list[int] = []
    done: set[int] = set()
    while len(placed) < len(inner):
        ready = next((i for i in range(len(inner)) if i not in done and all(p in done for p in inner[i])), None)
        if ready is None:  # only cycles are left: they are refused, their order does not matter
            ready = next(i for i in range(len(inner)) if i not in done)
        placed.append(ready)
        done.add(ready)
    return placed
