"""The canonical result hash: what replicas compare, so it covers exactly what the spec says counts.

Format (docs/result-hash.md): sha256 of the RFC 8785 JSON of
`{"version":1,"exit_code":N,"outputs":[{"path","size","sha256"} | {"path","absent":true}],
"stdout_sha256"?: hex, "killed"?: reason}`; outputs sorted by path, directories expanded, symlinks refused.
A kill by a limit hashes as `{"version":1,"killed":reason}` alone: what a run leaves when a limit stops it
(exit status, partial outputs, stdout) differs between honest runs and between runc and gVisor.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hashgrid.canonical import hash_document, sha256_file, sha256_hex
from hashgrid.errors import OutputRejected

RESULT_VERSION = 1
# kills by a limit of the spec: the outcome is the limit, whatever state the run was stopped in
LIMIT_KILLS = frozenset({"timeout", "memory", "pids", "output_too_large", "fuel"})


@dataclass(frozen=True)
class ResultHash:
    """A result hash and the document it is the hash of (kept so a dissent can be explained file by file)."""

    digest: bytes
    document: dict[str, Any]

    @property
    def hex(self) -> str:
        return "0x" + self.digest.hex()


def _name(entry: str, where: str) -> str:
    try:
        entry.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputRejected(f"output name under {where!r} is not valid UTF-8", path=where) from None
    return entry


def _expand(root: Path, relative: str) -> list[dict[str, Any]]:
    """Entries for one declared output, never following a symlink (the hash must not read host files)."""
    current = root
    parts = relative.split("/")
    for index, part in enumerate(parts):
        current = current / part
        shown = "/".join(parts[: index + 1])
        try:
            info = current.lstat()
        except FileNotFoundError:
            return [{"path": relative, "absent": True}]
        except NotADirectoryError:  # a parent is a file: the declared path cannot exist
            return [{"path": relative, "absent": True}]
        if stat.S_ISLNK(info.st_mode):
            raise OutputRejected(f"output {shown!r} is a symlink; outputs refuse symlinks", path=shown)
        if index < len(parts) - 1 and not stat.S_ISDIR(info.st_mode):
            return [{"path": relative, "absent": True}]
    return _entries(current, relative, info)


def _entries(path: Path, relative: str, info: os.stat_result) -> list[dict[str, Any]]:
    if stat.S_ISREG(info.st_mode):
        digest, size = sha256_file(path)
        return [{"path": relative, "size": size, "sha256": digest}]
    if stat.S_ISDIR(info.st_mode):
        found: list[dict[str, Any]] = []
        with os.scandir(path) as listing:
            for entry in listing:
                child = f"{relative}/{_name(entry.name, relative)}"
                found.extend(_entries(Path(entry.path), child, entry.stat(follow_symlinks=False)))
        return found
    if stat.S_ISLNK(info.st_mode):
        raise OutputRejected(f"output {relative!r} is a symlink; outputs refuse symlinks", path=relative)
    raise OutputRejected(f"output {relative!r} is not a regular file or directory", path=relative)


def output_entries(output_dir: Path, declared: Iterable[str]) -> list[dict[str, Any]]:
    """The sorted output entries of the declared paths under `output_dir`."""
    entries: list[dict[str, Any]] = []
    for relative in declared:
        entries.extend(_expand(Path(output_dir), relative))
    entries.sort(key=lambda entry: entry["path"].encode("utf-8"))
    return entries


def result_document(*, exit_code: int, output_dir: Path, declared: Iterable[str], stdout: bytes | None = None,
                    killed: str | None = None) -> dict[str, Any]:
    """The result document; `stdout` is given only when the spec says it counts.

    A kill by a limit (LIMIT_KILLS) is normalised to `{"version", "killed"}`: runc reports a fork bomb as exit
    137 and gVisor as exit 2, a memory hog's partial outputs depend on where the kill landed, a timeout's on
    the device's speed; the limit that stopped it is the one thing honest replicas share.
    """
    if killed in LIMIT_KILLS:
        # fuel and the wall clock are one budget, the task's time: which runs out first depends on the device
        return {"version": RESULT_VERSION, "killed": "timeout" if killed == "fuel" else killed}
    document: dict[str, Any] = {
        "version": RESULT_VERSION,
        "exit_code": int(exit_code),
        "outputs": output_entries(output_dir, declared),
    }
    if stdout is not None:
        document["stdout_sha256"] = sha256_hex(stdout)
    if killed is not None:
        document["killed"] = killed
    return document


def compute_result_hash(*, exit_code: int, output_dir: Path, declared: Iterable[str],
                        stdout: bytes | None = None, killed: str | None = None) -> ResultHash:
    """Hash a finished run's result (the bytes32 committed and revealed on chain)."""
    document = result_document(exit_code=exit_code, output_dir=output_dir, declared=declared, stdout=stdout,
                               killed=killed)
    return ResultHash(digest=hash_document(document), document=document)
