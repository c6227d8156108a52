"""The architecture's rules, read from the source: which module may import what.

Imports go one way, ``orchestrator`` <- ``tasks`` <- ``flows`` (DESIGN.md):
the core never imports Prefect-side code (only the command line, which sits
on top of everything, does), a task never imports another task, and each
third-party library with a seam of its own enters through one module.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "tasks", "flows", "deployments")
# Each package's layer: a module imports only from its own package and lower layers.
LAYERS = {
    "orchestrator.domain": 0,
    "orchestrator.adapters": 1,
    "orchestrator.stages": 2,
    "orchestrator.demo": 2,  # beside the stages: neither imports the other
    "tasks": 3,
    "flows": 4,
    "deployments": 5,
    "orchestrator.cli": 6,  # the command line drives everything
}
# The one module that may reach inside a dependency (each use documented and tested there).
INTERNALS = "orchestrator.adapters.internals"
# Private attributes read on something other than self: our own objects', or documented public ones.
OWN_PRIVATE_ATTRIBUTES = {
    ("orchestrator.demo.scripted", "_record"),
    ("orchestrator.domain.config", "_source"),
    ("orchestrator.adapters.leash", "_exit"),  # os._exit
    ("orchestrator.cli.main", "_exit"),  # os._exit
}
# Third-party libraries and the only modules that may import them.
OWNERS = {
    "git": {"orchestrator.adapters.git_commands"},
    "claude_agent_sdk": {"orchestrator.adapters.agent", "orchestrator.adapters.session_watch", INTERNALS},
    "sqlite_utils": {"orchestrator.adapters.store", "orchestrator.adapters.store_costs",
                     "orchestrator.adapters.store_dependencies", "orchestrator.adapters.store_migrations",
                     "orchestrator.adapters.store_records", "orchestrator.adapters.store_test_results"},
    "prefect": {m for m in LAYERS if LAYERS[m] >= LAYERS["tasks"]},  # the core runs without Prefect
}



def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code, as absolute names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def layer_of(name: str) -> str | None:
    """The package of LAYERS a module (or a name in it) belongs to."""
    return next((p for p in LAYERS if name == p or name.startswith(p + ".")), None)


def test_every_module_has_a_layer() -> None:
    # orchestrator/ itself holds only sub-packages: a new module goes into the one its role says.
    homeless = [m for m in modules() if layer_of(m) is None and m != "orchestrator"]
    assert not homeless, f"put these in a package of LAYERS (and the README's code map): {homeless}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_one_way(module: str) -> None:
    names = imports(modules()[module])
    mine = layer_of(module)
    if mine is None:
        return
    for name in names:
        theirs = layer_of(name)
        if theirs is None or theirs == mine:
            continue
        assert LAYERS[theirs] < LAYERS[mine], f"{module} imports {name}: {theirs} is not below {mine}"
    if top(module) == "tasks":
        others = {n for n in names if n.startswith("tasks.") and n.count(".") == 1 and n != module}
        assert others <= {"tasks.slots", "tasks.runs"}, f"{module} imports another task: {others}"  # neither is a task
    for library, owners in OWNERS.items():
        if any(top(n) == library for n in names):
            assert module in owners or layer_of(module) in owners, f"{module} imports {library}; only {sorted(owners)} may"


def test_the_readme_code_map_matches_the_tree() -> None:
    """One line per package in the README's code map, and no package it does not name."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^(\S+)/\s", section.split("```")[1], re.M))
    packages = {p.replace(".", "/") for p in LAYERS} | {"prompts", "scripts", "tests", "bench"}
    assert named == packages


def private_part(name: str) -> str | None:
    """``a.b._c.d`` -> ``a.b._c``: the name up to its first private part, if it has one."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and part != "__future__":
            return ".".join(parts[: i + 1])
    return None


def test_private_parts_of_dependencies_stay_in_one_adapter() -> None:
    imported = {(module, private) for module, path in modules().items() for name in imports(path)
                if top(name) not in PACKAGES and (private := private_part(name))}
    assert {module for module, _ in imported} <= {INTERNALS}, sorted(imported)
    read = set()
    for module, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and ast.unparse(node.value) not in {"self", "cls"}):
                read.add((module, node.attr))
    assert {r for r in read if r[0] != INTERNALS} <= OWN_PRIVATE_ATTRIBUTES, sorted(read - OWN_PRIVATE_ATTRIBUTES)


def test_no_flow_module_shares_a_name_with_an_installed_package() -> None:
    # Prefect puts the entrypoint's folder first on sys.path: such a module would shadow the package.
    for path in (ROOT / "flows").glob("*.py"):
        if path.stem != "__init__":
            assert importlib.util.find_spec(path.stem) is None, path.name


@pytest.mark.parametrize(("module", "kept_out"), [
    # What every orch command imports before it runs: orch status and orch tasks need none of them.
    ("orchestrator.cli.main", ("claude_agent_sdk", "prefect", "git", "asyncio")),
    # What the leash imports before every agent session's CLI starts.
    ("orchestrator.adapters.leash", ("pydantic", "claude_agent_sdk")),
])
def test_start_up_paths_leave_heavy_libraries_out(module: str, kept_out: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {kept_out!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""
