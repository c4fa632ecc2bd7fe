#!/usr/bin/env bash
# `make test` must leave the git work tree as it found it (setup, the tests and the planted bugs write only
# ignored paths). `snapshot` records `git status --porcelain` (and the content of every changed file) before
# the run; `compare` fails, listing what changed, when the tree differs after it. A second argument names the
# snapshot file (default build/tree-before.txt; the tests use their own, not to disturb make test's).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
before="${2:-build/tree-before.txt}"
state() { git status --porcelain=v1 --untracked-files=all; git diff --no-color HEAD 2>/dev/null | sha256sum; }
case "${1:-}" in
    snapshot) state > "$before" ;;
    compare)
        if ! state | diff -u "$before" - > "$before.diff"; then
            cat "$before.diff"
            echo "make test changed the git work tree (above): a step writes a tracked or unignored path" >&2
            exit 1
        fi
        echo "✓ the work tree is as make test found it" ;;
    *) echo "usage: $0 snapshot|compare" >&2; exit 2 ;;
esac
