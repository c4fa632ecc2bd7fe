"""A local content store addressed by sha256: blobs go in verified and come out verified.

Shared by the provider (inputs, wasm modules, specs) and the marketplace (uploads). A blob is written to a
temporary file, hashed while written and renamed into place only if its digest is the one asked for, so
the store never holds a blob under the wrong name and a failed put leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from hashgrid.canonical import CHUNK_SIZE, is_sha256_hex
from hashgrid.errors import ContentMissing, DigestMismatch, InvalidInput

log = logging.getLogger(__name__)


def _check_digest(sha256: str) -> str:
    digest = sha256.removeprefix("sha256:").lower()
    if not is_sha256_hex(digest):
        raise InvalidInput(f"not a sha256 hex digest: {sha256!r}")
    return digest


def copy_verified(source: BinaryIO, destination: Path, *, expected: str, what: str,
                  expected_size: int | None = None, mode: int = 0o444) -> int:
    """Copy a stream to `destination` while hashing it; on a digest or size mismatch, remove it and raise.

    Used to lay out inputs and modules: the bytes that are checked are the bytes that are used.
    """
    expected = _check_digest(expected)
    digest = hashlib.sha256()
    size = 0
    try:
        with destination.open("xb") as out:
            while chunk := source.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    break
                out.write(chunk)
        actual = digest.hexdigest()
        if expected_size is not None and size != expected_size:
            raise DigestMismatch(f"{what} (size: expected {expected_size} bytes, got {size}"
                                 f"{' or more' if size > expected_size else ''})", expected=expected,
                                 actual=actual if size <= expected_size else "(not computed: too large)")
        if actual != expected:
            raise DigestMismatch(what, expected=expected, actual=actual)
        destination.chmod(mode)
        return size
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


class ContentStore:
    """Blobs at `<root>/sha256/<ab>/<rest>`; temp files in `<root>/tmp` (same filesystem: atomic rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Where a blob lives (whether or not it is there)."""
        digest = _check_digest(sha256)
        return self._blobs / digest[:2] / digest[2:]

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_stream(self, stream: BinaryIO | Iterable[bytes], *, expected: str | None = None,
                   what: str = "blob") -> str:
        """Store a stream and return its digest; with `expected`, store nothing unless the sha256 matches."""
        digest = hashlib.sha256()
        handle, temp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in _chunks(stream):
                    digest.update(chunk)
                    out.write(chunk)
            actual = digest.hexdigest()
            if expected is not None and actual != _check_digest(expected):
                raise DigestMismatch(what, expected=_check_digest(expected), actual=actual)
            final = self.path_for(actual)
            if final.is_file():
                temp.unlink()
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                temp.chmod(0o444)
                os.replace(temp, final)
            return actual
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes, *, expected: str | None = None, what: str = "blob") -> str:
        return self.put_stream([data], expected=expected, what=what)

    def put_file(self, path: Path, *, expected: str | None = None, what: str | None = None) -> str:
        with Path(path).open("rb") as handle:
            return self.put_stream(handle, expected=expected, what=what or str(path))

    @contextmanager
    def open(self, sha256: str) -> Iterator[BinaryIO]:
        """Open a stored blob (a caller that uses the bytes verifies while reading: `copy_verified`)."""
        path = self.path_for(sha256)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ContentMissing(f"blob sha256:{_check_digest(sha256)} is not in the content store "
                                 f"{self.root}",
                                 sha256=_check_digest(sha256)) from None
        with handle:
            yield handle

    def get_bytes(self, sha256: str) -> bytes:
        """A small blob's bytes, verified."""
        with self.open(sha256) as handle:
            data = handle.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != _check_digest(sha256):
            raise DigestMismatch(f"stored blob {self.path_for(sha256)}", expected=_check_digest(sha256),
                                 actual=actual)
        return data

    def verify(self, sha256: str) -> None:
        """Re-hash a stored blob; a corrupt one is removed (it can be fetched again) and reported."""
        path = self.path_for(sha256)
        with self.open(sha256) as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(CHUNK_SIZE):
                digest.update(chunk)
        actual = digest.hexdigest()
        if actual != _check_digest(sha256):
            log.warning("removing corrupt blob %s (contents hash to %s)", path, actual)
            path.unlink(missing_ok=True)
            raise DigestMismatch(f"stored blob {path}", expected=_check_digest(sha256), actual=actual)

    def copy_to(self, sha256: str, destination: Path, *, what: str, expected_size: int | None = None) -> int:
        """Copy a blob out to `destination`, verifying the bytes as they are copied."""
        with self.open(sha256) as handle:
            return copy_verified(handle, destination, expected=sha256, what=what, expected_size=expected_size)

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def clear_temp(self) -> None:
        """Remove temp files left by a crashed process."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)


def _chunks(stream: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(stream, "read"):
        while chunk := stream.read(CHUNK_SIZE):  # type: ignore[union-attr]
            yield chunk
    else:
        yield from stream
