"""Files' sha256: read side by side, the same digests as one sequential pass, kept on disk per file while its size,
modification and status-change times and inode stay the same, read again when they change or EVALKIT_REHASH=1 asks."""

import hashlib
import os

import pytest

from evalkit import hashing
from evalkit.loading.fingerprints import weights_fingerprint
from evalkit.loading.locations import Location

pytestmark = pytest.mark.unit

SHARDS = {"model-00001-of-00003.safetensors": b"", "model-00002-of-00003.safetensors": b"a" * (3 << 20),
          "model-00003-of-00003.safetensors": bytes(range(256)) * 1000}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Every file's digest stored, in a store of this test's own; nothing remembered in memory (a new process)."""
    monkeypatch.setattr(hashing, "STORED_FROM_BYTES", 0)
    monkeypatch.setenv("EVALKIT_DIGEST_CACHE", str(tmp_path / "digests"))
    monkeypatch.delenv("EVALKIT_REHASH", raising=False)
    hashing._REMEMBERED.clear()
    yield tmp_path / "digests"
    hashing._REMEMBERED.clear()


def shards(folder):
    folder.mkdir()
    for name, content in SHARDS.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in SHARDS]


def test_files_read_side_by_side_have_the_digests_of_one_sequential_pass(tmp_path, store):
    paths = shards(tmp_path / "model")
    assert hashing.sha256_each(paths) == [hashlib.sha256(content).hexdigest() for content in SHARDS.values()]
    hashing._REMEMBERED.clear()
    assert hashing.sha256_files(paths) == hashlib.sha256(b"".join(SHARDS.values())).hexdigest()
    # the checkpoint's identity as evalkit gave it before reading side by side: cache keys made then stay valid
    fingerprint = weights_fingerprint(Location("local", str(tmp_path / "model")))
    assert fingerprint["weights_sha256"] == "07d9f48282ad99707212ba9d0abd61185a3964191943048da27eda994ff6087f"
    assert list(fingerprint["weight_files"].values()) == hashing.sha256_each(paths)


def test_only_the_changed_shard_is_read_again(tmp_path, store):
    """Stored digests replaced by a mark: what comes back as the mark was taken from the store, not read."""
    paths = shards(tmp_path / "model")
    hashing.sha256_each(paths)
    for stored in store.iterdir():
        stored.write_text("f" * 64)
    hashing._REMEMBERED.clear()
    paths[1].write_bytes(b"b" * 100)  # another size
    modified = paths[2].stat().st_mtime_ns + 10**9
    os.utime(paths[2], ns=(modified, modified))  # the same size, a later modification time
    assert hashing.sha256_each(paths) == ["f" * 64, hashlib.sha256(b"b" * 100).hexdigest(),
                                          hashlib.sha256(SHARDS["model-00003-of-00003.safetensors"]).hexdigest()]


def test_a_large_files_digest_is_stored_and_rehash_reads_the_file_again(tmp_path, store, monkeypatch):
    """A second process identifies a checkpoint from the stored digest (keyed by path, size and modification time)
    instead of reading it whole; EVALKIT_REHASH=1 reads it again; a changed file misses the store."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    first = hashing.sha256_files([weights])
    assert first == hashlib.sha256(b"weights" * 1000).hexdigest()
    (stored,) = store.iterdir()
    stored.write_text("f" * 64)  # what a later process reads instead of the file
    hashing._REMEMBERED.clear()  # each step below is a new process, as far as hashing knows
    assert hashing.sha256_files([weights]) == "f" * 64
    monkeypatch.setenv("EVALKIT_REHASH", "1")
    hashing._REMEMBERED.clear()
    assert hashing.sha256_files([weights]) == first
    assert stored.read_text() == first  # the store is mended too
    monkeypatch.delenv("EVALKIT_REHASH")
    weights.write_bytes(b"other weights")
    hashing._REMEMBERED.clear()
    assert hashing.sha256_files([weights]) == hashlib.sha256(b"other weights").hexdigest()
    status = weights.stat()  # rewritten in place, same size, its modification time set back (a build with fixed
    weights.write_bytes(b"OTHER weights")  # timestamps): only the status-change time tells
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns))
    hashing._REMEMBERED.clear()
    assert hashing.sha256_files([weights]) == hashlib.sha256(b"OTHER weights").hexdigest()


def test_a_bar_shows_the_bytes_hashed_only_when_there_are_many(tmp_path, store, monkeypatch, capsys):
    paths = shards(tmp_path / "model")
    hashing.sha256_each(paths)
    assert "hashing weights" not in capsys.readouterr().err
    monkeypatch.setattr(hashing, "PROGRESS_FROM_BYTES", 1)
    monkeypatch.setenv("EVALKIT_REHASH", "1")
    hashing._REMEMBERED.clear()
    hashing.sha256_each(paths)
    assert "hashing weights" in capsys.readouterr().err


def test_a_pooled_model_whose_files_were_rewritten_with_their_old_timestamps_is_not_reused(tmp_path):
    """A sweep's model pool keys a loaded model by its files' stamps: the same stamp as the digest store."""
    from evalkit.loading.pool import files_stamp

    paths = shards(tmp_path / "model")
    before = files_stamp({"name_or_path": str(tmp_path / "model")})
    status = paths[2].stat()
    paths[2].write_bytes(bytes(reversed(SHARDS["model-00003-of-00003.safetensors"])))
    os.utime(paths[2], ns=(status.st_atime_ns, status.st_mtime_ns))
    assert files_stamp({"name_or_path": str(tmp_path / "model")}) != before
