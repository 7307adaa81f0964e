"""Push-rule evaluation stays pure (ARCHITECTURE.md: "data in, actions out"): the evaluator and the rule
sets import nothing of Ranvier but each other, and nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import ranvier.push

PURE = ("evaluator.py", "rules.py")
ALLOWED_STDLIB = {"__future__", "collections", "copy", "dataclasses", "functools", "json", "re", "typing"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_evaluation_imports_only_pure_modules() -> None:
    package = Path(ranvier.push.__file__).parent
    for name in PURE:
        for module in _imports(package / name):
            if module.startswith("."):
                assert module.lstrip(".") in {"evaluator", "rules"}, (name, module)
            else:
                assert module.split(".")[0] in ALLOWED_STDLIB, (name, module)
