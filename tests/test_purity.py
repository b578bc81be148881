"""The import contract (STYLE rule 1, issue "Foundation" item 3).

kbproto must do no I/O and read no clock or OS entropy; kbtransport must not import
kbapps. We walk the AST of every module instead of importing it, so a forbidden import
inside a function body or an ``if TYPE_CHECKING`` block is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Top-level modules kbproto may never import: sockets, event loops, files, processes,
#: clocks, OS entropy and logging handlers, and the two packages above it.
KBPROTO_FORBIDDEN = frozenset(
    {
        "anyio", "asyncio", "concurrent", "ctypes", "datetime", "fcntl", "glob", "h11",
        "http", "importlib", "io", "kbapps", "kbtransport", "logging", "mmap",
        "multiprocessing", "os", "pathlib", "platform", "secrets", "select", "selectors",
        "shutil", "signal", "socket", "socketserver", "sqlite3", "ssl", "subprocess",
        "sys", "tempfile", "threading", "time", "trio", "urllib", "uuid", "wsproto",
    }
)  # fmt: skip

#: Builtins that do I/O or dynamic imports.
KBPROTO_FORBIDDEN_CALLS = frozenset({"open", "print", "input", "exec", "eval", "__import__"})

#: Module-level functions of ``random`` draw from the hidden global generator; a
#: ``random.Random(seed)`` instance passed in is fine.
RANDOM_ALLOWED_ATTRIBUTES = frozenset({"Random"})


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def kbproto_violations(source: str, filename: str = "<source>") -> list[str]:
    """Return one line per forbidden import or call in a kbproto module's source."""
    tree = ast.parse(source, filename)
    problems = [
        f"{filename}:{line}: imports {name}"
        for line, name in _imported_roots(tree)
        if name in KBPROTO_FORBIDDEN
    ]
    random_aliases = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "random"
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            problems.extend(
                f"{filename}:{node.lineno}: imports random.{alias.name}"
                for alias in node.names
                if alias.name not in RANDOM_ALLOWED_ATTRIBUTES
            )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr not in RANDOM_ALLOWED_ATTRIBUTES
        ):
            problems.append(f"{filename}:{node.lineno}: uses random.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in KBPROTO_FORBIDDEN_CALLS
        ):
            problems.append(f"{filename}:{node.lineno}: calls {node.func.id}()")
    return problems


def test_kbproto_is_pure() -> None:
    problems: list[str] = []
    for path in _modules("kbproto"):
        problems += kbproto_violations(path.read_text(), str(path.relative_to(ROOT)))
    assert problems == []


def test_kbtransport_does_not_import_kbapps() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line}: imports kbapps"
        for path in _modules("kbtransport")
        for line, name in _imported_roots(ast.parse(path.read_text()))
        if name == "kbapps"
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("import socket", "imports socket"),
        ("import os.path", "imports os"),
        ("from time import monotonic", "imports time"),
        ("def f():\n    import anyio", "imports anyio"),
        ("import random\nx = random.random()", "uses random.random"),
        ("import random as r\nx = r.choice([1])", "uses random.choice"),
        ("from random import randint", "imports random.randint"),
        ("import secrets", "imports secrets"),
        ("import logging", "imports logging"),
        ("from kbtransport import x", "imports kbtransport"),
        ("open('f')", "calls open()"),
    ],
)
def test_contract_catches_forbidden_source(source: str, needle: str) -> None:
    assert any(needle in line for line in kbproto_violations(source))


def test_contract_allows_pure_source() -> None:
    source = "import random\nimport hashlib, json\nrng = random.Random(1)\n"
    assert kbproto_violations(source) == []
