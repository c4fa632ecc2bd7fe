"""Result hashes: the test vectors of docs/result-hash.md, and the refusals that keep hashing safe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hashgrid.canonical import canonical_json
from hashgrid.errors import OutputRejected
from provider.results import compute_result_hash

# (files in /out, declared outputs, exit code, counted stdout, kill reason, canonical JSON, result hash)
VECTORS = [
    ({}, [], 0, None, None,
     '{"exit_code":0,"outputs":[],"version":1}',
     "0xd036e644e5744c23d33820cfc0220477dfb963a23c012a5412e3e07cd9f5ac7c"),
    ({"result.txt": b"hello\n"}, ["result.txt"], 0, None, None,
     '{"exit_code":0,"outputs":[{"path":"result.txt","sha256":'
     '"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03","size":6}],"version":1}',
     "0x41f7ea96478b0c5a19c6edeb273423ce6b6b602ec7537cfd6b3d9b50a24aadc5"),
    ({"data/b.txt": b"b", "data/a/x.bin": bytes(range(256)), "data/a/empty": b"", "ignored.txt": b"not "
                                                                                                 b"declared"},
     ["missing.txt", "data"], 0, None, None,
     '{"exit_code":0,"outputs":[{"path":"data/a/empty","sha256":'
     '"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},{"path":"data/a/x.bin",'
     '"sha256":"40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880","size":256},'
     '{"path":"data/b.txt","sha256":"3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d",'
     '"size":1},{"absent":true,"path":"missing.txt"}],"version":1}',
     "0x8599d1ebc7b5dfada521c95608e7d3d28fac7471bde96bc0ac22bdd54e7cfe58"),
    ({}, [], 3, b"out\n", None,
     '{"exit_code":3,"outputs":[],"stdout_sha256":'
     '"54034ac5c6e9ea95734ec2b729fd6d62abf64af34a9f9ce5d466cb788191a73d","version":1}',
     "0x4a0be18130a6e88431238443b1c251c581395575eafbee0a094e152ab87be60a"),
    ({"partial.txt": b"x"}, ["partial.txt"], 137, b"so far\n", "timeout",
     '{"killed":"timeout","version":1}',
     "0x16ca82e70fd2043136fcfe7478e78cfe63fc3e39dacc3f9195798f5bbead744e"),
    ({"partial.txt": b"x"}, ["partial.txt"], 2, None, "pids",
     '{"killed":"pids","version":1}',
     "0xb9122c9d6f6c4cd8e888f86029ab9d3584ec78ca3bbca480e383350a201d4066"),
    ({}, ["big"], 137, None, "memory",
     '{"killed":"memory","version":1}',
     "0xad1b9d7aa6823fdf2c19284ac95441859b0921e4a55270cb7fbf81a7150f91b6"),
    ({"big": b"yyyy"}, ["big"], 137, None, "output_too_large",
     '{"killed":"output_too_large","version":1}',
     "0x885e0f68b38d3f8ce4e55de5fee8295b402c4813582088d51444c41aec0c4a2b"),
    ({"partial.txt": b"x"}, ["partial.txt"], 137, None, "cancelled",
     '{"exit_code":137,"killed":"cancelled","outputs":[{"path":"partial.txt","sha256":'
     '"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881","size":1}],"version":1}',
     "0x4daf8c124fcd147eea503037e7dfd6c0db1272a2fad739fe9dd57018f439a138"),
]


def _build(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.mark.parametrize(("files", "declared", "exit_code", "stdout", "killed", "canonical", "expected"),
                         VECTORS)
def test_vectors(tmp_path: Path, files: dict[str, bytes], declared: list[str], exit_code: int,
                 stdout: bytes | None, killed: str | None, canonical: str, expected: str) -> None:
    _build(tmp_path, files)
    result = compute_result_hash(exit_code=exit_code, output_dir=tmp_path, declared=declared, stdout=stdout,
                                 killed=killed)
    assert canonical_json(result.document).decode() == canonical
    assert result.hex == expected


def test_hash_ignores_mtime_permissions_and_creation_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _build(first, {"d/x": b"1", "d/y": b"2"})
    _build(second, {"d/y": b"2", "d/x": b"1"})
    os.utime(second / "d" / "x", (0, 0))
    (second / "d" / "y").chmod(0o600)
    one = compute_result_hash(exit_code=0, output_dir=first, declared=["d"])
    two = compute_result_hash(exit_code=0, output_dir=second, declared=["d"])
    assert one.digest == two.digest


def test_different_content_different_hash(tmp_path: Path) -> None:
    _build(tmp_path / "a", {"r": b"1"})
    _build(tmp_path / "b", {"r": b"2"})
    assert (compute_result_hash(exit_code=0, output_dir=tmp_path / "a", declared=["r"]).digest
            != compute_result_hash(exit_code=0, output_dir=tmp_path / "b", declared=["r"]).digest)


def test_symlink_output_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    with pytest.raises(OutputRejected, match="symlink"):
        compute_result_hash(exit_code=0, output_dir=tmp_path, declared=["link"])


def test_symlink_inside_declared_directory_refused(tmp_path: Path) -> None:
    _build(tmp_path, {"d/ok": b"1"})
    (tmp_path / "d" / "sneaky").symlink_to("/etc")
    with pytest.raises(OutputRejected, match="d/sneaky"):
        compute_result_hash(exit_code=0, output_dir=tmp_path, declared=["d"])


def test_symlinked_parent_refused(tmp_path: Path) -> None:
    (tmp_path / "d").symlink_to("/etc")
    with pytest.raises(OutputRejected, match="symlink"):
        compute_result_hash(exit_code=0, output_dir=tmp_path, declared=["d/passwd"])


def test_fifo_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OutputRejected, match="not a regular file"):
        compute_result_hash(exit_code=0, output_dir=tmp_path, declared=["pipe"])


def test_parent_is_a_file_counts_as_absent(tmp_path: Path) -> None:
    _build(tmp_path, {"f": b"x"})
    result = compute_result_hash(exit_code=0, output_dir=tmp_path, declared=["f/inner"])
    assert result.document["outputs"] == [{"path": "f/inner", "absent": True}]


def test_a_limit_kill_hashes_the_same_whatever_the_backend_left(tmp_path: Path) -> None:
    """runc reports a fork bomb as exit 137, gVisor as exit 2 (measured); partial outputs and stdout differ
    with where the kill landed: none of it counts once a limit stopped the run."""
    _build(tmp_path / "runc", {"a": b"start\n", "b": b"123"})
    _build(tmp_path / "runsc", {"a": b"start\n"})
    runc = compute_result_hash(exit_code=137, output_dir=tmp_path / "runc", declared=["a", "b"], stdout=b"x",
                               killed="pids")
    runsc = compute_result_hash(exit_code=2, output_dir=tmp_path / "runsc", declared=["a", "b"], stdout=b"",
                                killed="pids")
    assert runc.digest == runsc.digest
    other = compute_result_hash(exit_code=137, output_dir=tmp_path / "runc", declared=["a"], killed="memory")
    itself = compute_result_hash(exit_code=137, output_dir=tmp_path / "runc", declared=["a"])
    assert len({runc.digest, other.digest, itself.digest}) == 3  # the reason counts; a kill is not an exit


def test_fuel_and_the_wall_clock_are_one_time_budget(tmp_path: Path) -> None:
    """A wasm loop runs out of fuel first on a fast device and of wall-clock time on a slow one: honest
    replicas of one task must agree, so both hash as a timeout."""
    _build(tmp_path / "fast", {"a": b"partial"})
    fast = compute_result_hash(exit_code=137, output_dir=tmp_path / "fast", declared=["a"], killed="fuel")
    slow = compute_result_hash(exit_code=137, output_dir=tmp_path / "fast", declared=["a"], killed="timeout")
    assert fast.digest == slow.digest
