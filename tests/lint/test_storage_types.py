"""Storage objects are typed: no parameter (or annotated attribute) named for a storage object in
``ranvier/`` may be typed ``Any`` or ``object``, or left unannotated where mypy would let it pass.

Typed as ``ranvier.storage.protocols.composite.Storage``, a family Protocol (``EventStore``, ``UserStorage``,
...) or a concrete SQL class, the call sites are checked by ``mypy --strict``; typed ``Any``, nothing about
them is. The check reads the source with ``ast`` (it imports nothing).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Names that hold a storage object (or one table family of it): storage, _storage, store, state_store,
# key_store, db, database, ...
STORAGE_NAME = re.compile(r"^_?(?:\w+_)?(?:storage|store|db|database)$")
UNTYPED = frozenset({"Any", "object", "typing.Any"})


def _annotation_text(node: ast.expr) -> str:
    text = ast.unparse(node).strip("'\"")
    # "Any | None" and "Optional[Any]" say as little as Any.
    for wrapper in (" | None", "None | "):
        text = text.replace(wrapper, "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1]
    return text


def untyped_storage(path: Path, root: Path) -> list[str]:
    """``file:line name: annotation`` for each storage-named parameter or annotated attribute typed Any,
    in line order."""
    where = path.relative_to(root)
    found = sorted(_untyped(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return [f"{where}:{line} {text}" for line, _, text in found]


def _untyped(tree: ast.Module) -> Iterator[tuple[int, int, str]]:
    """(line, column, "name: annotation") of each storage-named parameter or attribute typed Any."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if not STORAGE_NAME.match(arg.arg):
                    continue
                if arg.annotation is None:
                    yield arg.lineno, arg.col_offset, f"{arg.arg}: (unannotated)"
                elif _annotation_text(arg.annotation) in UNTYPED:
                    yield arg.lineno, arg.col_offset, f"{arg.arg}: {ast.unparse(arg.annotation)}"
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if STORAGE_NAME.match(name) and _annotation_text(node.annotation) in UNTYPED:
                yield node.lineno, node.col_offset, f"{name}: {ast.unparse(node.annotation)}"


def violations(root: Path) -> list[str]:
    return [v for path in sorted((root / "ranvier").rglob("*.py")) for v in untyped_storage(path, root)]


def test_no_storage_parameter_is_typed_any() -> None:
    assert violations(REPO) == []


def test_checker_catches_untyped_storage(tmp_path: Path) -> None:
    package = tmp_path / "ranvier" / "rooms"
    package.mkdir(parents=True)
    (package / "bad.py").write_text(
        "from typing import Any, Optional\n"
        "class A:\n"
        "    def __init__(self, storage: Any, *, state_store: 'Any | None' = None) -> None:\n"
        "        self._storage: Any = storage\n"
        "async def f(db: object, key_store: Optional[Any], store=None) -> None: ...\n",
        encoding="utf-8",
    )
    (package / "good.py").write_text(
        "from ranvier.storage.protocols.composite import Storage\n"
        "from ranvier.storage.interfaces import StateStore\n"
        "def g(storage: Storage, state_store: StateStore | None, restore: Any, dbname: Any) -> None: ...\n",
        encoding="utf-8",
    )
    assert violations(tmp_path) == [
        "ranvier/rooms/bad.py:3 storage: Any",
        "ranvier/rooms/bad.py:3 state_store: 'Any | None'",
        "ranvier/rooms/bad.py:4 _storage: Any",
        "ranvier/rooms/bad.py:5 db: object",
        "ranvier/rooms/bad.py:5 key_store: Optional[Any]",
        "ranvier/rooms/bad.py:5 store: (unannotated)",
    ]
