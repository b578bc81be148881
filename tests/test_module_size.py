"""Modules of kbtransport and kbapps stay small, or say why not (issue 15).

A module of more than ``LIMIT`` lines must give its reason in its docstring, in a
paragraph starting "Why one module": a reader who opens a long file learns at once
why its parts belong together, and a module that grows past the limit without one
fails here until someone decides whether to split it or to write the reason down.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 600
MODULES = sorted(p for package in ("kbtransport", "kbapps") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_says_why_it_is_one_module(path: Path) -> None:
    text = path.read_text()
    lines = text.count("\n")
    if lines <= LIMIT:
        return
    docstring = ast.get_docstring(ast.parse(text)) or ""
    assert "Why one module" in docstring, (
        f"{path.relative_to(ROOT)} has {lines} lines (over {LIMIT}) and its docstring "
        "does not say why it is one module: split it, or write the reason down"
    )
