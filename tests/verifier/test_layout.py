"""The verifier is a pure library the marketplace may import (docs/decisions.md 21) only while it imports
nothing but the standard library and the core: no marketplace, provider, billing, database or chain client."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

VERIFIER = Path(__file__).resolve().parents[2] / "verifier"
ALLOWED = {"hashgrid.errors", "verifier"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_verifier_imports_only_the_standard_library_and_the_core_errors() -> None:
    offending = {}
    for path in sorted(VERIFIER.glob("*.py")):
        bad = {name for name in imported(path)
               if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
               and name not in ALLOWED and not name.startswith("verifier.")}
        if bad:
            offending[path.name] = bad
    assert offending == {}

