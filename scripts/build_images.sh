#!/usr/bin/env bash
# Builds the sample sandbox images from local files (there is no container registry here) and writes
# build/images.json (tag -> image id) for the examples and tests. Idempotent: an image whose tag exists
# is kept; the debootstrap rootfs is cached as a tarball under build/ so a rebuild after `docker rmi` is fast.
#
# Image ids are reproducible: a fixed-time config and a sorted, time-stamped-at-0 layer loaded with `docker load`.
#   hashgrid/busybox:1       busybox-static + applet symlinks + nobody in /etc/passwd, /etc/group (+ a wget
#                            wrapper: busybox 1.35's wget crashes on -T N)
#   hashgrid/python-numpy:1  debootstrap --variant=minbase --include=python3,python3-numpy bookworm
#   hashgrid/pytorch-gpu:1   python-numpy + PyTorch from PyPI; only with --only pytorch-gpu (GPU providers)
#
# Usage: scripts/build_images.sh [--only busybox|python-numpy|pytorch-gpu]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build"
mkdir -p "$BUILD/images"

BUSYBOX_TAG="hashgrid/busybox:1"
BUSYBOX_REV=2  # bump when the image's contents change: an older build of the tag is replaced (label org.hashgrid.rev)
NUMPY_TAG="hashgrid/python-numpy:1"
GPU_TAG="hashgrid/pytorch-gpu:1"  # built only with --only pytorch-gpu (GPU providers)
ONLY="${2:-}"
[[ "${1:-}" == "--only" ]] || ONLY=""

log() { echo "build_images: $*" >&2; }

# temporary rootfs dirs, removed however the script ends
SCRATCH=()
trap 'for d in "${SCRATCH[@]+"${SCRATCH[@]}"}"; do rm -rf "$d"; done' EXIT

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# The Debian mirror apt already uses on this machine (deb822 .sources first, then the one-line format).
debian_mirror() {
    local uri=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        uri="$(awk '
            /^URIs:/ {u=$2}
            /^Suites:/ {for (i=2;i<=NF;i++) if ($i=="bookworm") s=1}
            /^$/ {if (u!="" && s) {print u; exit} u=""; s=0}
            END {if (u!="" && s) print u}' /etc/apt/sources.list.d/*.sources | head -n1)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# `docker load` an image made of one layer tarball and a config with a fixed creation time: the image id is
# the sha256 of that config, so the same layer always gives the same id (docker import stamps the current time,
# so every rebuild would get a new id and break specs that name the image). Args: layer.tar tag cmd-json env-json
load_image() {
    python3 - "$@" <<'PY' | docker load >/dev/null
import hashlib, io, json, sys, tarfile
layer, tag, cmd, env = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
labels = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
h = hashlib.sha256()
with open(layer, "rb") as fh:
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
config = json.dumps({
    "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
    "config": {"Cmd": cmd, "Env": env, "User": "65534:65534", "WorkingDir": "/", **({"Labels": labels} if labels else {})},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + h.hexdigest()]},
    "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/build_images.sh"}],
}, sort_keys=True, separators=(",", ":")).encode()
config_name = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as out:
    for name, data in ((config_name, config), ("manifest.json", manifest)):
        info = tarfile.TarInfo(name); info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    out.add(layer, arcname="layer.tar")
PY
}

# A tarball of a rootfs that depends only on the files' contents and modes (sorted, fixed times and owners).
reproducible_tar() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -C "$1" -cf "$2" .
}

# Minimal /etc so that user 65534 (nobody) has a name inside the sandbox.
write_etc() {
    local rootfs="$1"
    mkdir -p "$rootfs/etc"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
}

build_busybox() {
    local id rev
    id="$(image_id "$BUSYBOX_TAG")"
    rev="$(docker image inspect --format '{{index .Config.Labels "org.hashgrid.rev"}}' "$BUSYBOX_TAG" 2>/dev/null \
        || true)"
    if [[ -n "$id" && "$rev" == "$BUSYBOX_REV" ]]; then log "$BUSYBOX_TAG exists ($id)"; return; fi
    if [[ -n "$id" ]]; then
        log "$BUSYBOX_TAG is revision ${rev:-1}, rebuilding as $BUSYBOX_REV"
        docker rmi "$BUSYBOX_TAG" >/dev/null 2>&1 || true
    fi
    local bb; bb="$(command -v busybox || echo /bin/busybox)"
    file -L "$bb" 2>/dev/null | grep -q 'statically linked' || log "warning: $bb may not be static"
    local rootfs; rootfs="$(mktemp -d "$BUILD/images/busybox.XXXXXX")"
    SCRATCH+=("$rootfs")
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,in,out,tmp,proc,sys,dev}
    chmod 1777 "$rootfs/tmp"
    cp "$bb" "$rootfs/bin/busybox"
    # --list-full prints each applet with its install path (bin/sh, usr/bin/wget...).
    local applet
    while read -r applet; do
        [[ "$applet" == "bin/busybox" || -e "$rootfs/$applet" ]] && continue
        ln -s /bin/busybox "$rootfs/$applet"
    done < <("$bb" --list-full)
    # Debian's busybox 1.35 wget crashes (SIGSEGV) on `-T N`; `--timeout=N` is the same option and works.
    # The applet link becomes a script that rewrites the one form into the other.
    rm -f "$rootfs/usr/bin/wget"
    cat >"$rootfs/usr/bin/wget" <<'SH'
#!/bin/sh
# busybox 1.35's wget segfaults on -T N (scripts/build_images.sh): pass it as --timeout=N
prev=
for arg do
    shift
    if [ "$prev" = "-T" ]; then set -- "$@" "--timeout=$arg"; prev=; continue; fi
    case "$arg" in
        -T) prev=-T ;;
        -T*) set -- "$@" "--timeout=${arg#-T}" ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec /bin/busybox wget "$@"
SH
    chmod 755 "$rootfs/usr/bin/wget"
    write_etc "$rootfs"
    chmod 755 "$rootfs"
    reproducible_tar "$rootfs" "$rootfs.tar"
    SCRATCH+=("$rootfs.tar")
    load_image "$rootfs.tar" "$BUSYBOX_TAG" '["/bin/sh"]' '["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]' \
        "{\"org.hashgrid.rev\": \"$BUSYBOX_REV\"}"
    log "built $BUSYBOX_TAG"
}

build_numpy() {
    local id
    id="$(image_id "$NUMPY_TAG")"
    if [[ -n "$id" ]]; then log "$NUMPY_TAG exists ($id)"; return; fi
    local tarball="$BUILD/images/python-numpy-bookworm.tar"
    if [[ ! -s "$tarball" ]]; then
        local mirror; mirror="$(debian_mirror)"
        local rootfs; rootfs="$(mktemp -d "$BUILD/images/python-numpy.XXXXXX")"
        SCRATCH+=("$rootfs")
        log "debootstrap bookworm from $mirror (about 40 s)"
        if ! debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$rootfs" "$mirror" \
            >"$BUILD/images/debootstrap.log" 2>&1; then
            log "debootstrap failed, see $BUILD/images/debootstrap.log"; rm -rf "$rootfs"; exit 1
        fi
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        mkdir -p "$rootfs"/in "$rootfs"/out
        grep -q '^nobody:' "$rootfs/etc/passwd" \
            || echo 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >>"$rootfs/etc/passwd"
        chmod 755 "$rootfs"
        reproducible_tar "$rootfs" "$tarball.part"
        mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    else
        log "using cached rootfs $tarball"
    fi
    load_image "$tarball" "$NUMPY_TAG" '["/usr/bin/python3"]' \
        '["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8"]'
    log "built $NUMPY_TAG"
}

# The GPU example's image: the python-numpy rootfs plus PyTorch from PyPI (CUDA wheels, about 3 GB) in its
# /usr/local/lib/python3.11/dist-packages (bookworm's python is 3.11, like the host's, so the host's pip picks
# the wheels). Built only when asked (--only pytorch-gpu), on a provider with a GPU. The driver's libraries
# are not in it: the NVIDIA container toolkit (or CDI) mounts the host's when a GPU is attached. The same
# torch version gives the same image id (fixed times, sorted tar, no bytecode). TORCH_SPEC picks the version.
build_pytorch_gpu() {
    local id
    id="$(image_id "$GPU_TAG")"
    if [[ -n "$id" ]]; then log "$GPU_TAG exists ($id)"; return; fi
    local base="$BUILD/images/python-numpy-bookworm.tar"
    [[ -s "$base" ]] || build_numpy
    local rootfs; rootfs="$(mktemp -d "$BUILD/images/pytorch-gpu.XXXXXX")"
    SCRATCH+=("$rootfs" "$rootfs.tar")
    tar -C "$rootfs" -xf "$base"
    log "pip install ${TORCH_SPEC:-torch} into the rootfs (several GB)"
    python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --no-compile \
        --target "$rootfs/usr/local/lib/python3.11/dist-packages" "${TORCH_SPEC:-torch}"
    find "$rootfs" -name '__pycache__' -prune -exec rm -rf {} +
    reproducible_tar "$rootfs" "$rootfs.tar"
    load_image "$rootfs.tar" "$GPU_TAG" '["/usr/bin/python3"]' \
        '["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1", "LANG=C.UTF-8"]'
    log "built $GPU_TAG"
}

docker info >/dev/null 2>&1 || { log "the Docker engine is not reachable (start it first)"; exit 1; }
[[ -z "$ONLY" || "$ONLY" == "busybox" ]] && build_busybox
[[ -z "$ONLY" || "$ONLY" == "python-numpy" ]] && build_numpy
[[ "$ONLY" == "pytorch-gpu" ]] && build_pytorch_gpu

# build/images.json: every hashgrid/* image that exists now, tag -> id.
tmp="$BUILD/images.json.part"
{
    echo "{"
    first=1
    for tag in "$BUSYBOX_TAG" "$NUMPY_TAG" "$GPU_TAG"; do
        id="$(image_id "$tag")"
        [[ -z "$id" ]] && continue
        [[ $first -eq 1 ]] || echo ","
        printf '  "%s": "%s"' "$tag" "$id"
        first=0
    done
    echo ""
    echo "}"
} >"$tmp"
mv "$tmp" "$BUILD/images.json"
for tag in "$BUSYBOX_TAG" "$NUMPY_TAG" "$GPU_TAG"; do
    id="$(image_id "$tag")"
    [[ -n "$id" ]] && echo "$tag $id"
done
exit 0
