"""The house as `ls` shows it: each folder imports only what its docstring says it may.

The rules are the `May import:` line of each package's `__init__.py` docstring; this test
reads them from there and checks them against every import in the package, so the docstrings
stay true. It also holds the size rules of the layout (at most 20 entries at the top of
otari_server, no module over 600 lines).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import otari_server

ROOT = Path(otari_server.__file__).resolve().parent
PACKAGES = sorted(
    p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "__pycache__"
)


def allowed(package: str) -> set[str]:
    """The names in the `May import:` paragraph of a package's docstring."""
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
    match = re.search(r"May import:(.*?)(?:\n\n|\nImported by:|$)", doc, re.S)
    assert match, f"{package}/__init__.py has no 'May import:' line"
    return {name.strip("/").split(".")[0] for name in re.findall(r"`([a-z_./]+)`", match.group(1))}


def imported(package: str) -> dict[str, list[str]]:
    """Top-level otari_server names (folders or modules) `package` imports, with where."""
    found: dict[str, list[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = (
                    [f"{node.module}.{a.name}" for a in node.names]
                    if node.module == "otari_server"
                    else [node.module]
                )
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] == "otari_server" and len(parts) > 1 and parts[1] != package:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.setdefault(parts[1], []).append(where)
    found.pop("__version__", None)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_what_its_docstring_allows(package: str) -> None:
    rules = allowed(package)
    broken = {name: where for name, where in imported(package).items() if name not in rules}
    assert not broken, f"{package}/ imports what its docstring does not allow: {broken}"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_allowed_name_exists(package: str) -> None:
    names = {p.stem for p in ROOT.iterdir() if p.suffix == ".py"} | set(PACKAGES)
    assert allowed(package) <= names


def test_the_top_of_the_house_is_small_and_no_module_is_too_long() -> None:
    entries = [p for p in ROOT.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 20, sorted(p.name for p in entries)
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long
