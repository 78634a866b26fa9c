"""Content identities: canonical JSON of a value, sha256 of a text, sha256 of files (hashed once per process while
they are unchanged). Pure: the command line's checks use them before torch is imported."""

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


def sha256_files(paths: list[Path]) -> str:
    """sha256 of the files' contents in order, as if concatenated (parts of one file hash as the whole file). Hashed
    once per process while the files' sizes and modification times stay the same (a sweep asks many times)."""
    stamps = tuple((str(Path(p).resolve()), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)
    return _sha256_stamped_files(stamps)


@functools.lru_cache(maxsize=64)
def _sha256_stamped_files(stamps: tuple, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        with open(path, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()
