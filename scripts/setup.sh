#!/usr/bin/env bash
# `make setup`: install everything Hashgrid needs on a fresh Debian 12 box (root), idempotently.
#
#   1. apt packages      (skipped when dpkg says all are installed)
#   2. node tools        npm ci --ignore-scripts: forge/anvil/cast 1.7.1, solcjs 0.8.37, OpenZeppelin 5.7.0,
#                        forge-std 1.9.7 (via @layerzerolabs/toolbox-foundry), playwright-core
#                        (skipped when node_modules/.hashgrid-stamp matches package-lock.json)
#   3. python venv       .venv + pip install -e ".[dev]" (skipped when .venv/.hashgrid-stamp matches pyproject)
#   4. tool links        .venv/bin/{solc,forge,anvil,cast}
#   5. docker engine     daemon.json registers runsc; dockerd started if it does not answer
#   6. images, wasm, examples
#   7. web app           web/: npm ci (stamp: its lock), then esbuild into build/webapp (stamp: web/ sources)
#
# Env: HASHGRID_SKIP_APT=1, HASHGRID_SKIP_DOCKER=1 skip those steps; HASHGRID_FORCE=1 ignores the stamps.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p build
START=$EPOCHREALTIME
CURRENT="starting"

trap 'rc=$?; echo "✗ setup failed during: $CURRENT (exit $rc)${LOG:+ — log: $LOG}" >&2; \
      if [ -n "${LOG:-}" ] && [ -f "$LOG" ]; then tail -n 25 "$LOG" | sed "s/^/    /" >&2; fi' ERR

APT_PACKAGES=(
    docker.io runsc            # sandboxed job execution (runc + gVisor)
    redis-server postgresql    # Celery broker / marketplace database
    busybox-static debootstrap # building job images without a registry
    chromium                   # headless browser tests (playwright-core)
    python3-venv python3-pip git ca-certificates procps iproute2 psmisc
    gcc python3-dev            # the matching engine compiled by mypyc (scripts/build_matching_native.py)
)
PY=python3.11
VENV="$ROOT/.venv"

step() { CURRENT="$1"; }
ok() { printf '✓ %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "✗ need root (or sudo) for: $*" >&2; return 1; fi; }

# ---------------------------------------------------------------- 1. apt
step "apt packages"
if [ "${HASHGRID_SKIP_APT:-0}" = 1 ]; then
    ok "apt packages (skipped: HASHGRID_SKIP_APT=1)"
else
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        ok "apt packages (${#APT_PACKAGES[@]} already installed)"
    else
        LOG="$ROOT/build/setup-apt.log"
        : >"$LOG"
        export DEBIAN_FRONTEND=noninteractive
        # refresh the index only when it is missing or a package cannot be found in it
        if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 \
            || ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
            as_root apt-get update -q >>"$LOG" 2>&1
        fi
        if ! as_root apt-get install -y -q "${missing[@]}" >>"$LOG" 2>&1; then
            # a stale index (404 on a superseded .deb): refresh once and retry
            as_root apt-get update -q >>"$LOG" 2>&1
            as_root apt-get install -y -q "${missing[@]}" >>"$LOG" 2>&1
        fi
        ok "apt packages (installed: ${missing[*]})"
        LOG=""
    fi
fi

# ---------------------------------------------------------------- 2. node tools
step "node tools (npm ci)"
command -v node >/dev/null || { echo "✗ node not found (Node 20 is expected on the machine)" >&2; exit 1; }
command -v npm >/dev/null || { echo "✗ npm not found" >&2; exit 1; }
case "$(uname -m)" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) ARCH="$(uname -m)" ;;
esac
foundry_bin() { echo "$ROOT/node_modules/@foundry-rs/$1-linux-$ARCH/bin/$1"; }
NODE_STAMP="$ROOT/node_modules/.hashgrid-stamp"
node_want="$(hash_of package.json package-lock.json)-$(node --version)"
node_ok() {
    [ "${HASHGRID_FORCE:-0}" != 1 ] && [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$node_want" ] \
        && [ -x "$(foundry_bin forge)" ] && [ -x "$(foundry_bin anvil)" ] && [ -x "$(foundry_bin cast)" ] \
        && [ -f node_modules/solc/solc.js ] && [ -d node_modules/@layerzerolabs/toolbox-foundry/lib/forge-std ]
}
if node_ok; then
    ok "node tools (up to date)"
else
    LOG="$ROOT/build/setup-npm.log"
    # --ignore-scripts: the foundry binaries come as optional deps; toolbox-foundry's script must not run.
    # `npm ci`: installs exactly package-lock.json and never rewrites it (`npm install` added the foundry
    # platform packages of other systems to the lock whenever the registry served them, dirtying the clone).
    npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >"$LOG" 2>&1
    for t in forge anvil cast; do
        [ -x "$(foundry_bin $t)" ] || { echo "✗ $(foundry_bin $t) missing after npm ci" >&2; false; }
    done
    echo "$node_want" >"$NODE_STAMP"
    ok "node tools (forge $("$(foundry_bin forge)" --version | head -1 | sed 's/.*Version: //'), solcjs $(node -p "require('./node_modules/solc/package.json').version"))"
    LOG=""
fi

# ---------------------------------------------------------------- 3. python venv
step "python venv (pip install -e .[dev])"
command -v "$PY" >/dev/null || { echo "✗ $PY not found" >&2; exit 1; }
PY_STAMP="$VENV/.hashgrid-stamp"
py_want="$(hash_of pyproject.toml)"
if [ "${HASHGRID_FORCE:-0}" != 1 ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$py_want" ] \
    && [ -x "$VENV/bin/solc" ] && "$VENV/bin/python" -c "" >/dev/null 2>&1; then
    ok "python venv (up to date)"
else
    LOG="$ROOT/build/setup-pip.log"
    : >"$LOG"
    if ! "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))" >/dev/null 2>&1; then
        rm -rf "$VENV"
        "$PY" -m venv "$VENV" >>"$LOG" 2>&1
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]" >>"$LOG" 2>&1
    echo "$py_want" >"$PY_STAMP"
    ok "python venv ($("$VENV/bin/python" --version), $("$VENV/bin/python" -m pip list 2>/dev/null | wc -l) packages)"
    LOG=""
fi

# ---------------------------------------------------------------- 4. tool links
step "tool links in .venv/bin"
link() { # link TARGET NAME
    local dst="$VENV/bin/$2"
    [ "$(readlink "$dst" 2>/dev/null || true)" = "$1" ] || ln -sfn "$1" "$dst"
}
chmod +x scripts/solc
link "$ROOT/scripts/solc" solc
for t in forge anvil cast; do link "$(foundry_bin $t)" "$t"; done
ok "tool links (.venv/bin: solc forge anvil cast)"

# ---------------------------------------------------------------- 5. docker engine
step "docker engine"
if [ "${HASHGRID_SKIP_DOCKER:-0}" = 1 ]; then
    ok "docker engine (skipped: HASHGRID_SKIP_DOCKER=1)"
else
    # shellcheck source=scripts/docker_engine.sh
    source "$ROOT/scripts/docker_engine.sh"
    ensure_dockerd
    ok "docker engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null), runsc registered)"
fi

# ---------------------------------------------------------------- 6. sample images, wasm modules, examples
step "sample images (scripts/build_images.sh)"
if [ "${HASHGRID_SKIP_DOCKER:-0}" = 1 ]; then
    ok "sample images (skipped: HASHGRID_SKIP_DOCKER=1)"
else
    LOG="$ROOT/build/setup-images.log"; : >"$LOG"
    bash "$ROOT/scripts/build_images.sh" >>"$LOG" 2>&1
    ok "sample images ($(grep -c '"' "$ROOT/build/images.json" 2>/dev/null || echo 0) entries in build/images.json)"
    LOG=""
fi
step "wasm modules (scripts/build_wasm.sh)"
LOG="$ROOT/build/setup-wasm.log"; : >"$LOG"
PYTHON="$VENV/bin/python" bash "$ROOT/scripts/build_wasm.sh" >>"$LOG" 2>&1
ok "wasm modules"
LOG=""
step "matching engine (scripts/build_matching_native.py: mypyc into build/native-matching)"
"$VENV/bin/python" "$ROOT/scripts/build_matching_native.py"
step "examples (scripts/make_examples.py)"
LOG="$ROOT/build/setup-examples.log"; : >"$LOG"
"$VENV/bin/python" -m scripts.make_examples >>"$LOG" 2>&1
ok "examples (examples/*.yaml)"
LOG=""

# ---------------------------------------------------------------- 7. web app
step "web app (web/: npm ci, esbuild into build/webapp)"
WEB_NODE_STAMP="$ROOT/web/node_modules/.hashgrid-stamp"
web_node_want="$(hash_of web/package.json web/package-lock.json)-$(node --version)"
if [ "${HASHGRID_FORCE:-0}" = 1 ] || [ ! -f "$WEB_NODE_STAMP" ] || [ "$(cat "$WEB_NODE_STAMP")" != "$web_node_want" ]; then
    LOG="$ROOT/build/setup-web-npm.log"
    (cd web && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) >"$LOG" 2>&1
    echo "$web_node_want" >"$WEB_NODE_STAMP"
    LOG=""
fi
WEB_STAMP="$ROOT/build/webapp/.hashgrid-stamp"
web_want="$(cd web && find src build.mjs package-lock.json -type f | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)"
if [ "${HASHGRID_FORCE:-0}" != 1 ] && [ -f "$WEB_STAMP" ] && [ "$(cat "$WEB_STAMP")" = "$web_want" ] \
    && [ -f build/webapp/app.js ]; then
    ok "web app (up to date: build/webapp)"
else
    LOG="$ROOT/build/setup-web.log"
    node web/build.mjs >"$LOG" 2>&1
    echo "$web_want" >"$WEB_STAMP"
    ok "web app (build/webapp, $(du -k build/webapp/app.js | cut -f1) KiB of script)"
    LOG=""
fi

awk -v a="$START" -v b="$EPOCHREALTIME" \
    'BEGIN { printf "✓ setup done in %.1fs — tools: .venv/bin (source .venv/bin/activate)\n", b - a }'
