"""Content store and canonical hashing: blobs are verified on the way in and on the way out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hashgrid.canonical import canonical_json, from_hex32, hash_document, sha256_file, to_hex32
from hashgrid.content import ContentStore, copy_verified
from hashgrid.errors import ContentMissing, DigestMismatch, InvalidInput


def test_canonical_json_is_rfc8785() -> None:
    assert canonical_json({"b": [1, 2.5, "x"], "a": {"d": True, "c": None}}) == \
        b'{"a":{"c":null,"d":true},"b":[1,2.5,"x"]}'
    assert canonical_json({"é": "\u2028"}) == '{"é":"\u2028"}'.encode()
    assert hash_document({}) == hashlib.sha256(b"{}").digest()


def test_canonical_json_refuses_unsafe_integers() -> None:
    with pytest.raises(InvalidInput, match="cannot canonicalize"):
        canonical_json({"wei": 10**18 * 1000})


def test_hex32_round_trip() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert from_hex32(to_hex32(digest)) == digest
    assert from_hex32("sha256:" + digest.hex()) == digest
    with pytest.raises(InvalidInput):
        from_hex32("0x1234")


def test_put_get_verify(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest() and store.has(digest)
    assert store.get_bytes(digest) == b"hello"
    store.verify(digest)
    source = tmp_path / "f"
    source.write_bytes(b"hello")
    assert store.put_file(source, expected=digest) == digest  # idempotent


def test_put_with_wrong_digest_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    expected = hashlib.sha256(b"good").hexdigest()
    with pytest.raises(DigestMismatch) as caught:
        store.put_bytes(b"evil", expected=expected, what="input 'words.txt'")
    assert caught.value.expected == expected
    assert caught.value.actual == hashlib.sha256(b"evil").hexdigest()
    assert expected in caught.value.message and caught.value.actual in caught.value.message
    assert "input 'words.txt'" in caught.value.message
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_corrupt_blob_detected_and_removed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest = store.put_bytes(b"original")
    path = store.path_for(digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(DigestMismatch):
        store.copy_to(digest, tmp_path / "out", what="input 'x'")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DigestMismatch):
        store.verify(digest)
    assert not store.has(digest)


def test_copy_verified_checks_size(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"12345")
    digest, size = sha256_file(source)
    with source.open("rb") as handle, pytest.raises(DigestMismatch, match="size: expected 4 bytes, got 5"):
        copy_verified(handle, tmp_path / "dst", expected=digest, what="input", expected_size=4)
    assert not (tmp_path / "dst").exists()
    with source.open("rb") as handle:
        assert copy_verified(handle, tmp_path / "dst", expected=digest, what="input", expected_size=size) == 5


def test_missing_blob(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(ContentMissing, match="not in the content store"):
        store.get_bytes("00" * 32)
    with pytest.raises(InvalidInput):
        store.has("not-a-digest")
