"""Every public module declares a tuple ``__all__`` that covers what it defines.

STYLE rule 14: the public surface is small and explicit. A module is public when no
part of its dotted name starts with an underscore.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kbproto", "kbtransport", "kbapps")


def _public_modules() -> list[Path]:
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or any(
                part.startswith("_") and part != "__init__" for part in parts
            ):
                continue
            modules.append(path)
    return modules


def _declared_all(tree: ast.Module) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return node.value
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__all__"
        ):
            return node.value
    return None


@pytest.mark.parametrize("path", _public_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_has_complete_tuple_all(path: Path) -> None:
    tree = ast.parse(path.read_text())
    declared = _declared_all(tree)
    assert isinstance(declared, ast.Tuple), "public module needs a tuple __all__"
    names = [
        elt.value
        for elt in declared.elts
        if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
    ]
    assert len(names) == len(declared.elts), "__all__ holds only string literals"
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and not node.name.startswith("_")
    }
    missing = sorted(defined - set(names))
    assert missing == [], f"public names missing from __all__: {missing}"
    bound = defined | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    bound |= {
        alias.asname or alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    unknown = sorted(set(names) - bound)
    assert unknown == [], f"__all__ names not bound in the module: {unknown}"
