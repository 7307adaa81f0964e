"""The layers' arrows point down only (ARCHITECTURE.md "The layers").

protocol <- storage <- federation / rooms <- client_api / app. The check reads the source with ``ast`` (it
imports nothing), so it sees imports inside functions and ``TYPE_CHECKING`` blocks too, and resolves
relative imports. A layer whose directory does not exist yet simply has nothing to check.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# protocol is pure: the standard library and these crypto/JSON libraries only.
PROTOCOL_THIRD_PARTY = frozenset({"nacl", "signedjson", "canonicaljson", "orjson", "unpaddedbase64"})
# Layers below rooms must not reach up into the layers that compose them.
UPPER_LAYERS = ("ranvier.rooms", "ranvier.client_api", "ranvier.app")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
            else:
                base = ""
            if node.module:
                target = f"{base}.{node.module}" if base else node.module
                yield node.lineno, target
            else:  # "from . import x": x is a submodule (or a name) of the package
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value  # importlib.import_module("ranvier.x") is an import too


def python_files(root: Path, package: str) -> list[Path]:
    directory = root.joinpath(*package.split("."))
    return sorted(directory.rglob("*.py")) if directory.is_dir() else []


def protocol_violations(root: Path) -> list[str]:
    allowed_roots = set(sys.stdlib_module_names) | PROTOCOL_THIRD_PARTY | {"__future__"}
    found = []
    for path in python_files(root, "ranvier.protocol"):
        for line, module in imported_modules(path, root):
            top = module.split(".")[0]
            inside = module == "ranvier.protocol" or module.startswith("ranvier.protocol.")
            if not inside and top not in allowed_roots:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def upward_violations(root: Path, layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in python_files(root, layer):
        for line, module in imported_modules(path, root):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


def test_protocol_imports_only_stdlib_and_crypto_json_libraries() -> None:
    assert python_files(REPO, "ranvier.protocol"), "the protocol package should exist"
    assert protocol_violations(REPO) == []


@pytest.mark.parametrize("layer", ["ranvier.storage", "ranvier.federation"])
def test_lower_layers_do_not_import_upper_ones(layer: str) -> None:
    assert upward_violations(REPO, layer, UPPER_LAYERS) == []


def test_storage_does_not_import_federation() -> None:
    # storage sits below federation: protocol <- storage <- federation
    assert upward_violations(REPO, "ranvier.storage", ("ranvier.federation",)) == []


# -- the checker itself catches what it should -----------------------------------------------------


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_checker_catches_violations(tmp_path: Path) -> None:
    _write(tmp_path, "ranvier/protocol/__init__.py", "")
    _write(tmp_path, "ranvier/protocol/ok.py", "import json\nimport nacl.signing\nfrom . import events\n")
    _write(tmp_path, "ranvier/protocol/auth/__init__.py", "from ..events import Pdu\n")
    _write(tmp_path, "ranvier/protocol/bad_relative.py", "from ..storage import interfaces\n")
    _write(tmp_path, "ranvier/protocol/auth/bad_nested.py", "def f():\n    from ...rooms import x\n")
    _write(tmp_path, "ranvier/protocol/bad_third_party.py", "import aiohttp\n")
    _write(
        tmp_path,
        "ranvier/protocol/bad_typing.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ranvier.storage.sql import engine\n",
    )
    _write(
        tmp_path,
        "ranvier/protocol/bad_dynamic.py",
        "import importlib\nimportlib.import_module('ranvier.app')\n",
    )
    _write(tmp_path, "ranvier/federation/client.py", "import ranvier\nfrom ranvier.protocol import events\n")
    _write(tmp_path, "ranvier/federation/routes.py", "from ranvier.rooms.send import send\n")
    _write(tmp_path, "ranvier/storage/sql/x.py", "from ...client_api import errors\nimport ranvier.app\n")

    protocol = protocol_violations(tmp_path)
    assert [v.split(":")[0] for v in protocol] == [
        "ranvier/protocol/auth/bad_nested.py",
        "ranvier/protocol/bad_dynamic.py",
        "ranvier/protocol/bad_relative.py",
        "ranvier/protocol/bad_third_party.py",
        "ranvier/protocol/bad_typing.py",
    ]
    assert "imports ranvier.rooms" in protocol[0] and "imports ranvier.storage" in protocol[2]
    assert upward_violations(tmp_path, "ranvier.federation", UPPER_LAYERS) == [
        "ranvier/federation/routes.py:1 imports ranvier.rooms.send"
    ]
    assert upward_violations(tmp_path, "ranvier.storage", UPPER_LAYERS) == [
        "ranvier/storage/sql/x.py:1 imports ranvier.client_api",
        "ranvier/storage/sql/x.py:2 imports ranvier.app",
    ]
    assert upward_violations(tmp_path, "ranvier.rooms", UPPER_LAYERS) == []  # absent layer: nothing to check
