"""Reading homeserver.yaml's sections into typed objects, with errors that name the key.

Each section is a dataclass (``config.py``, ``workers/config.py``); ``read_section`` checks a YAML mapping
against the dataclass's annotations and bounds and builds it, collecting every problem as ``(key path,
message)`` so that one run reports them all ("listeners.client.port: Input should be less than or equal
to 65535"). Sections built in code (``Caches()``, ``dataclasses.replace``) are not checked: the type
checker checks them.

This replaces pydantic, which the configuration alone used: importing pydantic and building its validators
for the configuration's 34 models cost every server process about 7 MB of its idle RSS (issue 21: 63.6 ->
56.3 MB, measured as ``python3 -m bench memory`` does), for checks this module does in 250 lines.

What is accepted is what pydantic's default ("lax") mode accepted for these types, except that a boolean
is not taken for a number (``port: true``): an integer for a float; an integral float or a numeric string
for an integer; ``true``/``false``/``yes``/``no``/``on``/``off``/``1``/``0`` (any case) and 0/1 for a
boolean. A string must be a string.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")

# The problems found so far: (dotted key path, message).
Problems = list[tuple[str, str]]

_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n"})


class Invalid:
    """What a conversion returns after recording its problem (None is a valid value)."""


INVALID = Invalid()


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """A field with bounds (checked when read from a file, as pydantic's ``Field(ge=..., ...)``) and an
    optional ``check`` that raises ValueError with the message to report (or returns the value to keep).
    ``factory`` makes a fresh default each time (lists, dicts, sections)."""
    metadata = {
        name: value
        for name, value in (("ge", ge), ("gt", gt), ("le", le), ("min_length", min_length), ("check", check))
        if value is not None
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_FIELDS: dict[type[Any], tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    found = _FIELDS.get(cls)
    if found is None:
        # Annotations are strings (from __future__ import annotations): resolved once, in the class's module.
        hints = typing.get_type_hints(cls)
        found = _FIELDS[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
    return found


def read_section(cls: type[T], data: Any, problems: Problems, path: str = "") -> T | Invalid:
    """``cls`` built from ``data`` (a mapping), or INVALID with what is wrong added to ``problems``."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        problems.append((path, "Input should be a valid dictionary or instance of " + cls.__name__))
        return INVALID
    values: dict[str, Any] = {}
    failed = False
    known = _fields(cls)
    names = {f.name for f, _ in known}
    for key in data:
        if key not in names:
            problems.append((_join(path, str(key)), "Extra inputs are not permitted"))
            failed = True
    for f, hint in known:
        where = _join(path, f.name)
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append((where, "Field required"))
                failed = True
            continue
        value = _convert(hint, data[f.name], problems, where)
        if value is not INVALID and value is not None:
            value = _bounded(f.metadata, value, problems, where)
        check: Callable[[Any], Any] | None = f.metadata.get("check")
        if value is not INVALID and check is not None:
            try:
                value = check(value)
            except ValueError as e:
                problems.append((where, f"Value error, {e}"))
                value = INVALID
        if value is INVALID:
            failed = True
        else:
            values[f.name] = value
    return INVALID if failed else cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _bounded(bounds: Mapping[str, Any], value: Any, problems: Problems, where: str) -> Any:
    if "min_length" in bounds and len(value) < bounds["min_length"]:
        problems.append((where, f"String should have at least {bounds['min_length']} characters"))
        return INVALID
    bound = bounds.get("ge")
    if bound is not None and not value >= bound:
        problems.append((where, f"Input should be greater than or equal to {bound}"))
        return INVALID
    bound = bounds.get("gt")
    if bound is not None and not value > bound:
        problems.append((where, f"Input should be greater than {bound}"))
        return INVALID
    bound = bounds.get("le")
    if bound is not None and not value <= bound:
        problems.append((where, f"Input should be less than or equal to {bound}"))
        return INVALID
    return value


def _convert(hint: Any, value: Any, problems: Problems, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        return _union(get_args(hint), value, problems, where)
    if origin is Literal:
        choices = get_args(hint)
        # Compared with the type as well: YAML's bare `off` is False, which is not the string "off".
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        listed = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        problems.append((where, f"Input should be {listed if len(choices) > 1 else repr(choices[0])}"))
        return INVALID
    if origin is list:
        if not isinstance(value, list | tuple):
            problems.append((where, "Input should be a valid list"))
            return INVALID
        (item,) = get_args(hint)
        items = [_convert(item, v, problems, f"{where}.{i}") for i, v in enumerate(value)]
        return INVALID if any(v is INVALID for v in items) else items
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append((where, "Input should be a valid dictionary"))
            return INVALID
        key_hint, value_hint = get_args(hint)
        out = {}
        for k, v in value.items():
            key = _convert(key_hint, k, problems, f"{where}.{k}.[key]")
            item = _convert(value_hint, v, problems, f"{where}.{k}")
            if key is INVALID or item is INVALID:
                return INVALID
            out[key] = item
        return out
    if hint is type(None):
        if value is None:
            return None
        problems.append((where, "Input should be None"))
        return INVALID
    if hint is str:
        if isinstance(value, str):
            return value
        problems.append((where, "Input should be a valid string"))
        return INVALID
    if hint is bool:
        return _boolean(value, problems, where)
    if hint is int:
        return _integer(value, problems, where)
    if hint is float:
        return _number(value, problems, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return read_section(hint, value, problems, where)
    raise TypeError(f"{where}: no reader for {hint!r}")  # a field type this module was not written for


def _union(choices: tuple[Any, ...], value: Any, problems: Problems, where: str) -> Any:
    if value is None and type(None) in choices:
        return None
    others = [c for c in choices if c is not type(None)]
    attempts: list[Problems] = []
    for choice in others:
        tried: Problems = []
        converted = _convert(choice, value, tried, where)
        if converted is not INVALID:
            return converted
        attempts.append(tried)
    # Report the alternative the value was closest to: a mapping was meant as the section, anything
    # else as the plain value (the first alternative).
    sections = [i for i, c in enumerate(others) if isinstance(c, type) and dataclasses.is_dataclass(c)]
    pick = sections[0] if sections and isinstance(value, Mapping) else 0
    problems.extend(attempts[pick])
    return INVALID


def _boolean(value: Any, problems: Problems, where: str) -> bool | Invalid:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    problems.append((where, "Input should be a valid boolean"))
    return INVALID


def _integer(value: Any, problems: Problems, where: str) -> int | Invalid:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    problems.append((where, "Input should be a valid integer"))
    return INVALID


def _number(value: Any, problems: Problems, where: str) -> float | Invalid:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            pass
        else:
            if not math.isnan(parsed):
                return parsed
    problems.append((where, "Input should be a valid number"))
    return INVALID


def as_dict(section: Any, *, exclude_none: bool = False) -> dict[str, Any]:
    """A section as plain data (nested sections as dicts), as written in the file."""
    out = dataclasses.asdict(section)
    if exclude_none:
        out = {k: v for k, v in out.items() if v is not None}
    return out
