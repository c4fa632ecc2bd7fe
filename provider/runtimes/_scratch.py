"""Per-run scratch directories and the size-capped /out area shared by the docker and wasm backends.

/out is a tmpfs mounted on the host with `size=` one page above the cap: the kernel refuses writes past it
(ENOSPC), so a task can never fill the provider's disk, and the files outlive the sandbox (a tmpfs inside a
container vanishes with it) so they can be copied to the caller's output dir. Mounting needs CAP_SYS_ADMIN;
without it the area is a plain directory whose size is only checked after the run (logged as a weaker mode).

`OutputArea.pooled()` (used by the wasm backend, where a mount + unmount is a fifth of a whole run) takes an
already mounted tmpfs of the same cap from a per-process pool instead: same `size=` cap enforced by the kernel
while the task runs; on close() the task's files are deleted, and the tmpfs goes back to the pool only when it
is then verifiably empty (no blocks, only the root inode) and still owned/moded as mounted, else it is
unmounted. Pooled mounts are `hashgrid-pool-<pid>-*` dirs, unmounted at interpreter exit; ones left by a dead
process are swept when the next process first uses the pool.

With `log_cap_bytes`, the area also has `logs/`, a second tmpfs of that size where an in-process backend
(wasm) points the task's stdout and stderr files: the kernel caps them together as it caps /out, and they
are written without calling back into Python. Without CAP_SYS_ADMIN there is no `logs/` (`logs_mounted` is
False) and the backend keeps the logs in memory instead.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from provider.runtimes.errors import InvalidRunRequest

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "hashgrid-run-"
POOL_PREFIX = "hashgrid-pool-"
POOL_PER_SHAPE = 8  # idle mounts kept per (cap, uid, gid)
PAGE = 4096
MAX_OUTPUT_FILES = 65536  # tmpfs inode cap: empty files cost memory but no blocks
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MS_NOSUID, _MS_NODEV = 2, 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_warned_unmountable = False


def scratch_root() -> Path:
    """Where run dirs live: $HASHGRID_SCRATCH_DIR, else /dev/shm, else the system temp dir.

    A memory filesystem by default because a run dir holds only mount points (the data is in its own capped
    tmpfs) and making and removing dirs on this disk costs ~2 ms each, as much as a whole wasm run.
    """
    configured = os.environ.get("HASHGRID_SCRATCH_DIR")
    if configured:
        return Path(configured)
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def check_run_id(run_id: str) -> str:
    """Run ids name containers, cgroups and directories, so they must be short and path-safe."""
    if not _RUN_ID.match(run_id):
        raise InvalidRunRequest(f"run id {run_id!r} must match {_RUN_ID.pattern}", run_id=run_id)
    return run_id


def leftover_scratch_dirs() -> list[Path]:
    """Scratch dirs that still exist (tests assert none remain after a run)."""
    return sorted(scratch_root().glob(SCRATCH_PREFIX + "*"))


class OutputArea:
    """A run's scratch dir holding `out/` (capped at `cap_bytes`) and whatever files the backend needs."""

    def __init__(
        self,
        run_id: str,
        cap_bytes: int,
        owner_uid: int,
        owner_gid: int,
        *,
        prefix: str | None = None,
        log_cap_bytes: int = 0,
    ) -> None:
        self.cap_bytes = cap_bytes
        self.log_cap_bytes = log_cap_bytes
        self.owner = (owner_uid, owner_gid)
        self.pool_key: tuple[int, ...] | None = None  # set for areas that return to the pool
        self.in_pool = False  # given back: a second close() must not touch it
        self.dir = Path(
            tempfile.mkdtemp(prefix=prefix or f"{SCRATCH_PREFIX}{check_run_id(run_id)}-", dir=scratch_root())
        )
        self.out = self.dir / "out"
        self.out.mkdir()
        self.logs = self.dir / "logs"
        self.mounted = False
        self.logs_mounted = False
        try:
            self.mounted = _mount_tmpfs(self.out, cap_bytes, MAX_OUTPUT_FILES, owner_uid, owner_gid)
            if self.mounted and log_cap_bytes:
                self.logs.mkdir()
                self.logs_mounted = _mount_tmpfs(self.logs, log_cap_bytes, 8, owner_uid, owner_gid)
            if not self.mounted:
                self._weaker_mode(owner_uid, owner_gid)
        except BaseException:
            self.close()
            raise

    @classmethod
    def pooled(
        cls, run_id: str, cap_bytes: int, owner_uid: int, owner_gid: int, *, log_cap_bytes: int = 0
    ) -> OutputArea:
        """A capped, empty tmpfs from the per-process pool (or a fresh one); close() gives it back.

        Without CAP_SYS_ADMIN (no tmpfs) this is a plain per-run area, as with the constructor.
        """
        check_run_id(run_id)
        key = (cap_bytes, log_cap_bytes, owner_uid, owner_gid)
        area = _POOL.take(key)
        if area is None:
            area = cls(
                run_id,
                cap_bytes,
                owner_uid,
                owner_gid,
                prefix=f"{POOL_PREFIX}{os.getpid()}-",
                log_cap_bytes=log_cap_bytes,
            )
            if not area.mounted:  # no pooling of plain dirs: their size is not capped while the task runs
                area.close()
                return cls(run_id, cap_bytes, owner_uid, owner_gid)
        area.pool_key = key
        _POOL.lend(area)
        return area

    def _weaker_mode(self, uid: int, gid: int) -> None:
        """No tmpfs: a plain /out dir owned by the task's user, its size checked only after the run."""
        global _warned_unmountable
        if not _warned_unmountable:
            log.warning(
                "cannot mount a tmpfs for /out (%s): output size is checked after the run only",
                os.strerror(ctypes.get_errno()),
            )
            _warned_unmountable = True
        if os.geteuid() == 0:
            os.chown(self.out, uid, gid)
        else:
            self.out.chmod(0o777)

    def used_bytes(self) -> int:
        """Bytes the task wrote to /out (tmpfs: pages in use; plain dir: sizes of what is there)."""
        if self.mounted:
            st = os.statvfs(self.out)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        total = 0
        for root, dirs, files in os.walk(self.out):
            for name in files + dirs:
                total += os.lstat(os.path.join(root, name)).st_size
        return total

    def over_cap(self) -> bool:
        return self.used_bytes() > self.cap_bytes

    def export(self, dest: Path) -> None:
        """Copy what the task wrote into `dest`: regular files and dirs, symlinks as links (never followed).

        FIFOs, sockets and devices are skipped: they are not results, and opening a FIFO would block.
        """
        dest.mkdir(parents=True, exist_ok=True)
        self._copy_tree(self.out, dest)

    def _copy_tree(self, src: Path, dst: Path) -> None:
        with os.scandir(src) as entries:
            for entry in entries:
                target = dst / entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    target.mkdir(exist_ok=True)
                    self._copy_tree(Path(entry.path), target)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copyfile(entry.path, target, follow_symlinks=False)
                elif stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(entry.path), target)
                else:
                    log.info("skipping special file %s in the output", entry.path)

    def close(self) -> None:
        """Unmount and delete everything (a pooled area: empty it and give it back); safe to call twice."""
        if self.in_pool:
            return
        key, self.pool_key = self.pool_key, None
        if key is not None and self.mounted and self._empty_for_reuse() and _POOL.give(key, self):
            return
        if key is not None:
            _POOL.forget(self)
        self._unmount_and_remove()

    def _empty_for_reuse(self) -> bool:
        """Delete what the task and its logs wrote; True when /out is then as fresh (empty, same owner and
        mode). `logs/` needs no such check: no task can reach it, only wasmtime writes its two files there."""
        if self.log_cap_bytes and not (self.logs_mounted and _emptied_logs(self.logs)):
            return False
        return _emptied(self.out, self.owner)

    def _unmount_and_remove(self) -> None:
        if self.logs_mounted and _unmount(self.logs):
            self.logs_mounted = False
        if self.mounted and _unmount(self.out):
            self.mounted = False
        if not self.mounted and not self.logs_mounted:
            shutil.rmtree(self.dir, ignore_errors=True)


def _mount_tmpfs(path: Path, cap_bytes: int, max_files: int, uid: int, gid: int) -> bool:
    """Mount a tmpfs of `cap_bytes` (one page over: going past the cap is visible) on `path`; False if not
    allowed here (no CAP_SYS_ADMIN)."""
    size = (cap_bytes + PAGE - 1) // PAGE * PAGE + PAGE
    opts = f"size={size},nr_inodes={max_files},uid={uid},gid={gid},mode=0700"
    flags = _MS_NOSUID | _MS_NODEV
    return _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, opts.encode()) == 0


def _unmount(path: Path) -> bool:
    raw = str(path).encode()
    if _libc.umount2(raw, 0) != 0 and _libc.umount2(raw, 2) != 0:  # 2 = MNT_DETACH
        log.error("cannot unmount %s: %s", path, os.strerror(ctypes.get_errno()))
        return False
    return True


def _emptied_logs(logs: Path) -> bool:
    """Delete the previous run's stdout and stderr files."""
    try:
        for name in os.listdir(logs):
            os.unlink(os.path.join(logs, name))
    except OSError as exc:
        log.info("not reusing %s: %s", logs, exc)
        return False
    return True


def _emptied(mount: Path, owner: tuple[int, int]) -> bool:
    """Delete everything under a tmpfs mount; True when it is then as fresh (empty, same owner and mode)."""
    try:
        with os.scandir(mount) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        st = os.statvfs(mount)
        own = os.lstat(mount)
    except OSError as exc:
        log.info("not reusing %s: %s", mount, exc)
        return False
    return (
        st.f_blocks == st.f_bfree
        and st.f_files - st.f_ffree <= 1
        and (own.st_uid, own.st_gid) == owner
        and stat.S_IMODE(own.st_mode) == 0o700
    )


class _Pool:
    """Idle mounted tmpfs areas by (cap, uid, gid); all unmounted at interpreter exit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[tuple[int, ...], list[OutputArea]] = {}
        self.lent: set[OutputArea] = set()  # pooled areas in use (or never given back): unmounted at exit too
        self.swept = False

    def take(self, key: tuple[int, ...]) -> OutputArea | None:
        with self.lock:
            if not self.swept:
                self.swept = True
                _sweep_dead_pools()
            areas = self.idle.get(key)
            if not areas:
                return None
            area = areas.pop()
            area.in_pool = False
            self.lent.add(area)
            return area

    def lend(self, area: OutputArea) -> None:
        with self.lock:
            self.lent.add(area)

    def give(self, key: tuple[int, ...], area: OutputArea) -> bool:
        with self.lock:
            areas = self.idle.setdefault(key, [])
            if len(areas) >= POOL_PER_SHAPE:
                return False
            self.lent.discard(area)
            area.in_pool = True
            areas.append(area)
            return True

    def forget(self, area: OutputArea) -> None:
        with self.lock:
            self.lent.discard(area)

    def drain(self) -> None:
        with self.lock:
            areas = [a for group in self.idle.values() for a in group] + list(self.lent)
            self.idle.clear()
            self.lent.clear()
        for area in areas:
            area.in_pool = False
            area._unmount_and_remove()


def _sweep_dead_pools() -> None:
    """Unmount pool dirs whose process is gone (killed before its atexit drain)."""
    for path in scratch_root().glob(POOL_PREFIX + "*"):
        try:
            pid = int(path.name[len(POOL_PREFIX) :].split("-", 1)[0])
            os.kill(pid, 0)
            continue  # alive (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        for mount in (path / "logs", path / "out"):
            if os.path.ismount(mount):
                _libc.umount2(str(mount).encode(), 2)
        shutil.rmtree(path, ignore_errors=True)


_POOL = _Pool()
atexit.register(_POOL.drain)
