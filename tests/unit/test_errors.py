"""The exception tree is one module, and its docstring draws it as it is."""

from __future__ import annotations

import inspect
import re

import supasaasy.errors as errors
from supasaasy.client import FunctionError
from supasaasy.config import ConfigFileError
from supasaasy.connectors import ConfigError, ProviderError
from supasaasy.devstack import StackError


def _drawn() -> dict[str, str | None]:
    """class -> parent, as the module's docstring draws them."""
    parents: dict[str, str | None] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        found = re.match(r"^((?:[│ ]   )*)(?:[├└]── )?([A-Z]\w*Error)\b", line)
        if not found:
            continue
        depth = len(found.group(1)) // 4 + (1 if "──" in line else 0)
        stack[depth:] = [found.group(2)]
        parents[found.group(2)] = stack[depth - 1] if depth else None
    return parents


def test_the_docstring_draws_every_class_with_its_parent() -> None:
    defined = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }
    drawn = _drawn()
    assert set(drawn) == set(defined)
    for name, cls in defined.items():
        parent = drawn[name]
        assert (parent is None) == (cls is errors.SupasaasyError), name
        if parent is not None:
            assert cls.__bases__[0] is defined[parent], (name, parent)


def test_the_modules_that_raise_them_still_export_them() -> None:
    assert ConfigError is errors.ConfigError and ProviderError is errors.ProviderError
    assert FunctionError is errors.FunctionError and ConfigFileError is errors.ConfigFileError
    assert StackError is errors.StackError and issubclass(StackError, RuntimeError)
