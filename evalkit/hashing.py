"""Content identities: canonical JSON of a value, sha256 of a text, sha256 of files (hashed once while they are
unchanged). Pure: the command line's checks use them before torch is imported.

A file's digest is kept in memory for the process and, for large files (a checkpoint's shards), on disk in
EVALKIT_DIGEST_CACHE (default ~/.cache/evalkit/digests; empty: off), keyed by path, size and modification time: an
8B checkpoint is not read a second time, in full, to be identified. EVALKIT_REHASH=1 hashes every file anew."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path


def canonical_json(value) -> str:
    """`value` as JSON with sorted keys, every mapping key made a string first (as JSON writes them): an identity to
    hash or compare. Sorting raw keys fails on mixed ones, such as max_memory={0: 10GiB, cpu: 60GiB}."""

    def with_string_keys(item):
        if isinstance(item, Mapping):
            return {str(key): with_string_keys(inner) for key, inner in item.items()}
        if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
            return [with_string_keys(inner) for inner in item]
        return item

    return json.dumps(with_string_keys(value), sort_keys=True, default=str)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """sha256 of the files' contents in order, as if concatenated (parts of one file hash as the whole file), hashed
    once while the files' sizes and modification times stay the same (a sweep asks many times)."""
    stamps = tuple((str(Path(p).resolve()), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
    return _sha256_stamped_files(stamps)


STORED_FROM_BYTES = 1 << 26  # smaller files hash in well under a second: not worth a file of their own


def digest_store() -> Path | None:
    value = os.environ.get("EVALKIT_DIGEST_CACHE", "~/.cache/evalkit/digests")
    return Path(value).expanduser() if value else None


@functools.lru_cache(maxsize=64)
def _sha256_stamped_files(stamps: tuple, chunk: int = 1 << 22) -> str:
    store = digest_store() if sum(size for _, size, _ in stamps) >= STORED_FROM_BYTES else None
    stored = store / sha256_text(canonical_json(stamps)) if store else None
    if stored and os.environ.get("EVALKIT_REHASH") != "1":
        try:
            text = stored.read_text(encoding="ascii").strip()
            if len(text) == 64:
                return text
        except (OSError, UnicodeDecodeError):
            pass
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    if stored:
        keep_digest(stored, digest.hexdigest())
    return digest.hexdigest()


def keep_digest(stored: Path, digest: str) -> None:
    """Written whole or not at all (a temporary file renamed); a store that cannot be written is only skipped."""
    try:
        stored.parent.mkdir(parents=True, exist_ok=True)
        temporary = stored.with_name(f".{stored.name}.{os.getpid()}")
        temporary.write_text(digest, encoding="ascii")
        os.replace(temporary, stored)
    except OSError:
        pass
