"""Compile the matching engine with mypyc into build/native-matching/ (`make setup` runs it; seconds).

The sources are copied to a scratch directory and compiled there, so no .so lands beside them; the result is
stamped with the sources' hash (marketplace/matching/_native.py loads it only while that hash holds). Without
a C compiler or mypyc it says so and the engine runs as plain Python.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from marketplace.matching import _native  # noqa: E402


def main() -> int:
    build = _native.BUILD
    want = _native.digest()
    try:
        if json.loads((build / "stamp.json").read_text())["digest"] == want:
            print("✓ matching engine compiled (up to date)")
            return 0
    except (OSError, ValueError, KeyError, TypeError):
        pass
    scratch = build.with_name("native-matching.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "marketplace").mkdir(parents=True)
    shutil.copy(ROOT / "marketplace" / "__init__.py", scratch / "marketplace")
    shutil.copytree(ROOT / "marketplace" / "matching", scratch / "marketplace" / "matching",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copytree(ROOT / "hashgrid", scratch / "hashgrid", ignore=shutil.ignore_patterns("__pycache__"))
    sources = [f"marketplace/matching/{name}.py" for name in _native.COMPILED]
    done = subprocess.run([sys.executable, "-m", "mypyc", *sources], cwd=scratch, capture_output=True,
                          text=True)
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        print("! matching engine not compiled (mypyc failed; the engine runs as Python):\n"
              f"{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
        return 0
    # keep only the compiled modules: a Python copy left there would shadow the real sources
    for path in sorted(scratch.rglob("*")):
        if path.is_file() and not path.name.endswith(".so"):
            path.unlink()
    shutil.rmtree(scratch / "build", ignore_errors=True)
    shutil.rmtree(scratch / "hashgrid", ignore_errors=True)
    (scratch / "stamp.json").write_text(json.dumps({"digest": want, "modules": list(_native.COMPILED)}))
    shutil.rmtree(build, ignore_errors=True)
    scratch.rename(build)
    print("✓ matching engine compiled (mypyc)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
