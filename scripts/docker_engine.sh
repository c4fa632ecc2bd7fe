#!/usr/bin/env bash
# Docker engine for Hashgrid: register gVisor (runsc) as a runtime and make sure dockerd answers.
#
#   source scripts/docker_engine.sh && ensure_dockerd     # from other scripts
#   bash scripts/docker_engine.sh                          # stand-alone
#
# Idempotent: when `docker info` already answers and daemon.json already registers runsc it does nothing.
# dockerd is started in the background (setsid, log in build/dockerd.log) only when it does not answer.
# Env: DOCKERD_WAIT (seconds to wait for the daemon, default 30), DOCKER_DAEMON_JSON (default
# /etc/docker/daemon.json), DOCKERD_PIDFILE (default /var/run/docker.pid), DOCKERD_ARGS (extra dockerd
# arguments, e.g. for a second daemon on another socket; pair with DOCKER_HOST).

_HG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

# Merge {"runtimes": {"runsc": {"path": ..., "runtimeArgs": ["--network=none"]}}} into daemon.json, keeping
# whatever else is there. Prints "changed" when the file was rewritten.
ensure_daemon_json() {
    local file="${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
    local runsc
    runsc="$(command -v runsc || true)"
    [ -n "$runsc" ] || return 0          # no gVisor installed: nothing to register
    mkdir -p "$(dirname "$file")"
    python3 - "$file" "$runsc" <<'PY'
import json, os, sys
path, runsc = sys.argv[1], sys.argv[2]
try:
    with open(path) as fh:
        text = fh.read()
    cfg = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    cfg = {}
except ValueError as e:
    sys.exit(f"{path} is not valid JSON ({e}); fix or remove it")
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
rt = cfg.setdefault("runtimes", {})
cur = rt.get("runsc") or {}
if cur.get("path") == runsc and "--network=none" in (cur.get("runtimeArgs") or []):
    sys.exit(0)
cur.update(path=runsc)
cur["runtimeArgs"] = [a for a in cur.get("runtimeArgs") or [] if not a.startswith("--network")] + ["--network=none"]
rt["runsc"] = cur
tmp = path + ".tmp"
with open(tmp, "w") as fh:
    json.dump(cfg, fh, indent=2)
    fh.write("\n")
os.replace(tmp, path)
print("changed")
PY
}

ensure_dockerd() {
    local wait="${DOCKERD_WAIT:-30}" log="$_HG_ROOT/build/dockerd.log" changed pid
    local pidfile="${DOCKERD_PIDFILE:-/var/run/docker.pid}"
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        echo "✗ docker: dockerd/docker not installed (apt-get install docker.io)" >&2
        return 1
    fi
    changed="$(ensure_daemon_json)" || return 1
    if _docker_ok; then
        if [ "$changed" = "changed" ]; then
            # runtimes are reloadable: SIGHUP makes a running dockerd re-read daemon.json
            pid="$(cat "$pidfile" 2>/dev/null || true)"
            [ -n "$pid" ] && kill -HUP "$pid" 2>/dev/null || true
            sleep 1
        fi
        return 0
    fi
    mkdir -p "$(dirname "$log")"
    # a dockerd that died leaves its pid file behind and refuses to start again
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    if [ ! -f "$pidfile" ]; then
        # dockerd starts its own containerd; setsid keeps it alive after this shell exits
        # shellcheck disable=SC2086
        setsid nohup dockerd --pidfile "$pidfile" ${DOCKERD_ARGS:-} >>"$log" 2>&1 </dev/null &
    fi  # else a dockerd is already coming up: just wait for it
    local i
    for ((i = 0; i < wait * 2; i++)); do
        _docker_ok && return 0
        sleep 0.5
    done
    echo "✗ docker: dockerd did not answer within ${wait}s; see $log:" >&2
    tail -n 15 "$log" >&2 || true
    return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    ensure_dockerd
    echo "✓ docker engine ($(docker version --format '{{.Server.Version}}' 2>/dev/null), runtimes: $(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null))"
fi
