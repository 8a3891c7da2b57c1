"""Field docstrings of the spec dataclasses, read from their source: the one text of each option's help."""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path


@functools.cache
def field_docs(module: str, name: str) -> dict[str, str]:
    """The docstring under each field of dataclass `name` in `module`, on one line; fields without one are absent.

    Read from the module's source with `ast`, not by importing it, so that the CLI can build its help without
    loading the recipes (and torch) before a command runs.
    """
    found = importlib.util.find_spec(module)
    if found is None or found.origin is None:
        raise ValueError(f"no source for module {module}")
    tree = ast.parse(Path(found.origin).read_text(encoding="utf-8"))
    cls = next((node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name), None)
    if cls is None:
        raise ValueError(f"no class {name} in {module}")
    docs: dict[str, str] = {}
    for field, after in zip(cls.body, cls.body[1:]):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[field.target.id] = " ".join(after.value.value.split())
    return docs
