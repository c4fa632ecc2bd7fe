#!/usr/bin/env bash
# Proves each contract invariant can fail: for every contracts/test/bugs/<invariant>.patch, apply it to a scratch
# copy of the contracts (never the real tree), run the invariant suite there (the smaller "bugs" profile), and count
# the patch as caught only if that run fails with <invariant> among the failing tests; then revert it. Prints
# patch -> caught/missed; exits 1 if any is missed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The native binary: the npm wrapper node_modules/.bin/forge (bin.mjs) exits 0 even when tests fail.
FORGE="${FORGE:-$(ls "$ROOT"/node_modules/@foundry-rs/forge-linux-*/bin/forge 2>/dev/null | head -1)}"
FORGE="${FORGE:-$ROOT/node_modules/.bin/forge}"
BUGS="$ROOT/contracts/test/bugs"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/hashgrid-bugs.XXXXXX")"
cleanup() { rm -rf "$SCRATCH"; }
trap cleanup EXIT INT TERM

[ -x "$FORGE" ] || { echo "forge not found at $FORGE (run make setup)" >&2; exit 2; }
shopt -s nullglob
patches=("$BUGS"/*.patch)
[ ${#patches[@]} -gt 0 ] || { echo "no patches in $BUGS" >&2; exit 2; }

# One pristine copy: the contract sources and the invariant suite (only these, so each run compiles as little as
# it can), the forge config, the solc wrapper and the two libraries forge compiles (copied, not linked: forge only
# compiles libraries inside the project root).
BASE="$SCRATCH/base"
mkdir -p "$BASE/scripts" "$BASE/node_modules/@openzeppelin" "$BASE/node_modules/@layerzerolabs/toolbox-foundry/lib" \
    "$BASE/contracts/test"
cp -R "$ROOT/contracts/src" "$BASE/contracts/src"
cp -R "$ROOT/contracts/test/invariant" "$BASE/contracts/test/invariant"
cp "$ROOT/foundry.toml" "$BASE/"
cp "$ROOT/scripts/solc" "$BASE/scripts/solc"
cp -R "$ROOT/node_modules/@openzeppelin/contracts" "$BASE/node_modules/@openzeppelin/contracts"
cp -R "$ROOT/node_modules/@layerzerolabs/toolbox-foundry/lib/forge-std" \
    "$BASE/node_modules/@layerzerolabs/toolbox-foundry/lib/forge-std"
# the wrapper finds solcjs under its repo; point it at the real one
export SOLCJS="${SOLCJS:-$ROOT/node_modules/solc/solc.js}"

# Build the pristine copy once; each patch is then applied to it, tested and reverted in place, so forge's cache
# recompiles only the patched file and what imports it.
echo "== building the scratch copy ..." >&2
(cd "$BASE" && "$FORGE" build >"$SCRATCH/build.log" 2>&1) || { tail -20 "$SCRATCH/build.log" >&2; exit 2; }

declare -a rows
missed=0
for patch in "${patches[@]}"; do
    name="$(basename "$patch" .patch)"
    if ! (cd "$BASE" && git apply "$patch") 2>"$SCRATCH/$name.apply.log"; then
        rows+=("$name|MISSED (patch does not apply: $(head -1 "$SCRATCH/$name.apply.log"))")
        missed=$((missed + 1))
        continue
    fi
    echo "== $name: running the invariant suite with the bug planted ..." >&2
    set +e
    # the smaller "bugs" invariant profile (foundry.toml): a planted bug shows within a few runs
    (cd "$BASE" && FOUNDRY_PROFILE=bugs "$FORGE" test --match-path 'contracts/test/invariant/*' 2>&1) \
        >"$SCRATCH/$name.log"
    rc=$?
    set -e
    (cd "$BASE" && git apply -R "$patch")
    # forge lists the failing tests after "Failing tests:"; the name may sit on the line after "[FAIL: ...]".
    failing="$(sed -n '/^Failing tests:/,$p' "$SCRATCH/$name.log" | grep -oE 'invariant_[A-Za-z0-9_]+\(' \
        | tr -d '(' | sort -u | paste -sd, -)"
    if [ $rc -ne 0 ] && [[ ",$failing," == *",$name,"* ]]; then
        rows+=("$name|caught (failing: $failing)")
    else
        rows+=("$name|MISSED (forge exit $rc)")
        missed=$((missed + 1))
        tail -20 "$SCRATCH/$name.log" >&2
    fi
done

printf '\n%-45s %s\n' "patch" "result"
printf '%-45s %s\n' "-----" "------"
for row in "${rows[@]}"; do
    printf '%-45s %s\n' "${row%%|*}" "${row#*|}"
done
if [ $missed -ne 0 ]; then
    echo "$missed planted bug(s) missed" >&2
    exit 1
fi
echo "all ${#patches[@]} planted bugs caught"
