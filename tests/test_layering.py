"""The architecture's rules, read from the source: which module may import what.

Imports go one way, ``orchestrator`` <- ``tasks`` <- ``flows`` (DESIGN.md):
the core never imports Prefect-side code (only the command line, which sits
on top of everything, does), a task never imports another task, and each
third-party library with a seam of its own enters through one module.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "tasks", "flows", "deployments")
# The command line drives everything, so it may import the Prefect side.
CLI_LAYER = {"cli", "cli_read", "cli_serve", "cli_setup", "doctor"}
# Third-party libraries and the only modules that may import them.
OWNERS = {
    "git": {"orchestrator.gitops"},
    "claude_agent_sdk": {"orchestrator.agent", "orchestrator.leash"},
    "sqlite_utils": {"orchestrator.store", "orchestrator.store_migrations"},
}
# Private parts of dependencies in use, each in one module; issue 13 replaces or wraps them.
PRIVATE_IMPORTS = {
    ("tasks.slots", "prefect.concurrency._leases"),
    ("orchestrator.cli", "typer._click"),
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found[f"{package}.{path.stem}" if path.stem != "__init__" else package] = path
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


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_one_way(module: str) -> None:
    names = imports(modules()[module])
    layer, stem = top(module), module.rsplit(".", 1)[-1]
    if layer == "orchestrator" and stem not in CLI_LAYER:
        assert not {n for n in names if top(n) in {"tasks", "flows", "deployments", "prefect"}}, module
    if layer == "tasks":
        assert not {n for n in names if top(n) in {"flows", "deployments"}}, module
        others = {n for n in names if n.startswith("tasks.") and n.count(".") == 1 and n != module}
        assert others <= {"tasks.slots"}, f"{module} imports another task: {others}"  # the agent limit is no task
    for library, owners in OWNERS.items():
        if any(top(n) == library for n in names):
            assert module in owners, f"{module} imports {library}; only {sorted(owners)} may"


def private_part(name: str) -> str | None:
    """``a.b._c.d`` -> ``a.b._c``: the name up to its first private part, if it has one."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and part != "__future__":
            return ".".join(parts[: i + 1])
    return None


def test_private_parts_of_dependencies_stay_where_they_are() -> None:
    used = {(module, private) for module, path in modules().items() for name in imports(path)
            if top(name) not in PACKAGES and (private := private_part(name))}
    assert used <= PRIVATE_IMPORTS, sorted(used - PRIVATE_IMPORTS)


def test_no_flow_module_shares_a_name_with_an_installed_package() -> None:
    # Prefect puts the entrypoint's folder first on sys.path: such a module would shadow the package.
    for path in (ROOT / "flows").glob("*.py"):
        if path.stem != "__init__":
            assert importlib.util.find_spec(path.stem) is None, path.name
