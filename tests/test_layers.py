"""The layers: dependencies run one way, cli -> jobs -> {archive, components, shadow} -> repo.

Every module under src/shadowvault is parsed and each import it makes, at module level or inside a
function (hiding a cycle in a function does not remove it), is checked against the arrows that must
never be. A failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shadowvault

PACKAGE_ROOT = Path(shadowvault.__file__).parent

# package -> the packages it must never import (service/ is the daemon, a peer of cli/)
FORBIDDEN: dict[str, set[str]] = {
    "shadow": {"archive", "components", "jobs", "cli", "service"},
    "archive": {"shadow", "components", "jobs", "cli", "service"},
    "repo": {"archive", "shadow", "components", "jobs", "cli", "service"},
    "components": {"jobs", "cli", "service"},
    "jobs": {"cli", "service"},
    "mount": {"shadow", "components", "jobs", "cli", "service", "vm"},  # reads repositories only
    "vm": {"archive", "components", "jobs", "cli", "service", "mount"},  # QEMU's side of the qemu writer
    "disk": {"archive", "components", "jobs", "cli", "service", "recover"},  # partition tables, layouts
    "directory": {"archive", "components", "jobs", "cli", "service", "shadow"},  # slapd, Samba tools
    "recover": {"cli", "service"},  # a job: a machine rebuilt on an empty disk
}
# nothing below the jobs imports the recover job
for _lower in ("shadow", "archive", "repo", "components", "mount", "vm"):
    FORBIDDEN[_lower].add("recover")
TOP_LEVEL = "(top)"  # the modules directly in shadowvault/ (errors, proc, the demos, ...)


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).parts
    return parts[0] if len(parts) > 1 else TOP_LEVEL


def _module_name(path: Path) -> list[str]:
    parts = ["shadowvault", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every shadowvault import in `path`, relative ones resolved."""
    return imports_in(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, here: list[str], *, is_package: bool = False) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from shadowvault import archive` imports the package archive
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if name.split(".")[0] == "shadowvault"]


def _target_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE_ROOT / parts[1]).is_dir()) else None


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        package = _package_of(path)
        forbidden = FORBIDDEN.get(package, set())
        if package != "cli":
            forbidden = forbidden | {"cli"}  # nothing below the command line imports it
        for line, module in imported_modules(path):
            target = _target_package(module)
            if target in forbidden:
                where = path.relative_to(PACKAGE_ROOT.parent)
                found.append(f"{where}:{line}: {package}/ imports {module}")
    return found


def test_the_scan_sees_lazy_relative_and_dynamic_imports() -> None:
    """The checker itself: imports inside functions, relative ones and import_module are all seen."""
    source = (
        "import os\n"
        "def f():\n"
        "    from shadowvault.archive import restore\n"
        "    from ..archive.listing import walk_tree\n"
        "    from . import base\n"
        "    importlib.import_module('shadowvault.cli.main')\n"
    )
    found = imports_in(source, ["shadowvault", "shadow", "writers", "x"])
    assert [name for _, name in found] == [
        "shadowvault.archive.restore",
        "shadowvault.shadow.archive.listing.walk_tree",
        "shadowvault.shadow.writers.base",
        "shadowvault.cli.main",
    ]
    assert [_target_package(name) for _, name in found] == ["archive", "shadow", "shadow", "cli"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_exists(package: str) -> None:
    assert (PACKAGE_ROOT / package).is_dir() or package in ("service",), f"{package}/ is missing"


def test_no_arrow_points_up_or_sideways() -> None:
    found = violations()
    assert not found, "imports against the layers (docs/architecture.md):\n" + "\n".join(found)


MODULE_LINES = 410  # "no module over ~400 lines" (docs/architecture.md): small modules with one job


def test_no_module_outgrows_one_job() -> None:
    """A module past ~400 lines does several jobs: split it where a seam is (a collaborator with a
    job of its own), as repo/, archive/ and shadow/ were."""
    sizes = {
        str(path.relative_to(PACKAGE_ROOT)): len(path.read_text().splitlines())
        for path in PACKAGE_ROOT.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MODULE_LINES} == {}
