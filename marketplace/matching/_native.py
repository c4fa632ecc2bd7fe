"""Use the mypyc-compiled matching engine when `make setup` built one from exactly these sources.

The compiled modules live in build/native-matching/, never beside the sources: a stale build is ignored (its
stamp names the sources' hash), so an edited engine.py runs as edited. HASHGRID_MATCHING_NATIVE=0 turns it
off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

COMPILED = ("engine", "failures", "queue", "funnel", "filters", "models")  # what mypyc builds of this package
HERE = Path(__file__).resolve().parent
BUILD = HERE.parents[1] / "build" / "native-matching"


def digest(package: Path = HERE) -> str:
    """What a build must have been made from: the compiled modules' sources and the Python version."""
    h = hashlib.sha256(f"python {sys.version_info[0]}.{sys.version_info[1]}\n".encode())
    for name in COMPILED:
        h.update(f"{name}\n".encode())
        h.update((package / f"{name}.py").read_bytes())
    return h.hexdigest()


def activate(path: list[str], build: Path = BUILD) -> bool:
    """Put the compiled modules first on the package's `path` if `build` holds them for these sources."""
    if os.environ.get("HASHGRID_MATCHING_NATIVE", "1") == "0":
        return False
    try:
        built = json.loads((build / "stamp.json").read_text())["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if built != digest():
        return False
    path.insert(0, str(build / "marketplace" / "matching"))
    if str(build) not in sys.path:
        sys.path.append(str(build))  # the shared library the compiled modules load by a top-level name
    return True
