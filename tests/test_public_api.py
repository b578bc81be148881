"""Every public module declares a tuple ``__all__`` that covers what it defines.

STYLE rule 14: the public surface is small and explicit. A module is public when no
part of its dotted name starts with an underscore.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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
    if path == ROOT / "kbproto" / "__init__.py":
        # Its names come from kbproto._exports on first use (PEP 562 __getattr__);
        # the test below checks that they load and match.
        exports = ast.parse((ROOT / "kbproto" / "_exports.py").read_text())
        bound |= {
            alias.asname or alias.name
            for node in exports.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
    unknown = sorted(set(names) - bound)
    assert unknown == [], f"__all__ names not bound in the module: {unknown}"


def test_kbproto_names_load_on_first_use_and_match_their_exports() -> None:
    # A leaf module (what kb-prv-create imports) must not pull in the protocol core:
    # docs/benchmarks.md ("Start-up") measures what that saves each command.
    code = (
        "import sys, kbproto.prv;"
        "print(sorted(m for m in sys.modules if m.startswith('kbproto.')));"
        "import kbproto, kbproto._exports as e;"
        "print(sorted(n for n in vars(e) if not n.startswith('_') and n != 'annotations'));"
        "print(sorted(n for n in kbproto.__all__ if n != '__version__'));"
        "print(kbproto.HubCore.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    leaf, exported, public, hub = done.stdout.splitlines()
    assert "kbproto.hub" not in leaf, leaf
    assert "kbproto._exports" not in leaf, leaf
    assert exported == public
    assert hub == "kbproto.hub"
    import kbproto

    assert set(kbproto.__all__) <= set(dir(kbproto))  # names listed before they load
