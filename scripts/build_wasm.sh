#!/usr/bin/env bash
# Builds the WASM sample and test modules from C with zig (`python -m ziglang cc --target=wasm32-wasi -O2`).
# Idempotent by source hash: a module is rebuilt only when its .c changed (stamps in build/wasm/).
#   examples/wasm/<name>.c      -> examples/wasm/<name>.wasm   (samples; generated, not committed)
#   tests/provider/wasm/<name>.c -> build/wasm/<name>.wasm      (misbehaving modules for the sandbox tests)
# The first build takes ~40 s (zig builds wasi-libc into ~/.cache/zig); later ones well under a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
mkdir -p "$ROOT/build/wasm"

build() {
    local src="$1" out="$2" sum stamp
    stamp="$ROOT/build/wasm/$(basename "$out").src-sha256"
    sum="$(sha256sum "$src" | cut -d' ' -f1)"
    if [[ -f "$out" && "$(cat "$stamp" 2>/dev/null)" == "$sum" ]]; then
        echo "build_wasm: $out is up to date" >&2
    else
        "$PY" -m ziglang cc --target=wasm32-wasi -O2 "$src" -o "$out.part"
        mv "$out.part" "$out"
        echo "$sum" >"$stamp"
        echo "build_wasm: built $out" >&2
    fi
    echo "$out $(sha256sum "$out" | cut -d' ' -f1)"
}

for src in "$ROOT"/examples/wasm/*.c; do
    [[ -e "$src" ]] && build "$src" "${src%.c}.wasm"
done
for src in "$ROOT"/tests/provider/wasm/*.c; do
    [[ -e "$src" ]] && build "$src" "$ROOT/build/wasm/$(basename "${src%.c}").wasm"
done
