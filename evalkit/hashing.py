"""Content identities: canonical JSON of a value, sha256 of a text, sha256 of files (hashed once while they are
unchanged). Pure: the command line's checks use them before torch is imported.

A file's digest is kept in memory for the process and, for large files (a checkpoint's shards), on disk in
EVALKIT_DIGEST_CACHE (default ~/.cache/evalkit/digests; empty: off), keyed by the file's stamp (path, size, inode,
modification and status-change times; the last no copy or extraction can set, so a file rewritten with its old size
and timestamps is read again): an 8B checkpoint is not read a second time, in full, to be identified. EVALKIT_REHASH=1
hashes every file anew. Files not known yet are read side by side (a checkpoint's shards), with a progress bar when
there is a GiB or more to read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from evalkit.files import write_atomic


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
    once while the files' stamps stay the same (a sweep asks many times)."""
    return _digests([tuple(file_stamp(p) for p in paths)])[0]


def sha256_each(paths: list[Path]) -> list[str]:
    """Each file's sha256 (what sha256_files([path]) gives), the files not known yet read side by side: a checkpoint's
    shards take about the time of reading them, not of hashing them one after another."""
    return _digests([(file_stamp(p),) for p in paths])


STORED_FROM_BYTES = 1 << 26  # smaller files hash in well under a second: not worth a file of their own
PROGRESS_FROM_BYTES = 1 << 30  # a GiB takes seconds to read and hash: worth a bar
CHUNK_BYTES = 1 << 22
_REMEMBERED: dict[tuple, str] = {}  # stamps -> digest, for this process (a sweep asks many times)


def digest_store() -> Path | None:
    value = os.environ.get("EVALKIT_DIGEST_CACHE", "~/.cache/evalkit/digests")
    return Path(value).expanduser() if value else None


class Stamp(NamedTuple):
    """What identifies a file's contents while it is not rewritten."""

    path: str
    size: int
    modified_ns: int
    inode: int
    status_changed_ns: int


def file_stamp(path: Path) -> Stamp:
    status = os.stat(path)
    return Stamp(str(Path(path).resolve()), status.st_size, status.st_mtime_ns, status.st_ino, status.st_ctime_ns)


def _stored_at(stamps: tuple) -> Path | None:
    store = digest_store() if sum(stamp.size for stamp in stamps) >= STORED_FROM_BYTES else None
    return store / sha256_text(canonical_json(stamps)) if store else None


def _recalled(stamps: tuple) -> str | None:
    """The digest this process already knows, else the stored one (unless EVALKIT_REHASH=1), else None."""
    if stamps in _REMEMBERED:
        return _REMEMBERED[stamps]
    stored = _stored_at(stamps)
    if stored and os.environ.get("EVALKIT_REHASH") != "1":
        try:
            text = stored.read_text(encoding="ascii").strip()
            if re.fullmatch("[0-9a-f]{64}", text):
                _REMEMBERED[stamps] = text
                return text
        except (OSError, UnicodeDecodeError):
            pass
    return None


def _digests(groups: list[tuple]) -> list[str]:
    """The digest of each group of stamped files (each group's files hashed as one stream); the groups not known yet
    are read side by side, and those stored from then on."""
    found = {group: _recalled(group) for group in groups}
    to_read = [group for group, digest in found.items() if digest is None]
    if to_read:
        with _progress(sum(stamp.size for group in to_read for stamp in group)) as advance:
            read = _read_side_by_side(to_read, advance)
        for group, digest in zip(to_read, read):
            found[group] = _REMEMBERED[group] = digest
            if stored := _stored_at(group):
                keep_digest(stored, digest)
    return [found[group] for group in groups]


def _read_side_by_side(groups: list[tuple], advance) -> list[str]:
    """sha256 of each group, groups in threads (file reads and hashlib's updates of large blocks release the GIL): up
    to one per CPU this process may use, at most 8 (more outrun the disk, not the hashing)."""
    stop = threading.Event()

    def read(group: tuple) -> str:
        digest = hashlib.sha256()
        for stamp in group:
            with open(stamp.path, "rb") as handle:
                while not stop.is_set() and (block := handle.read(CHUNK_BYTES)):
                    digest.update(block)
                    advance(len(block))
        return digest.hexdigest()

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=min(len(groups), usable, 8)) as pool:
        try:
            return list(pool.map(read, groups))
        except BaseException:  # Ctrl-C or an unreadable file: the other reads end at their next block, not their last
            stop.set()
            raise


@contextlib.contextmanager
def _progress(total: int):
    """A callable counting bytes read: it moves a bar on stderr when there is a GiB or more to read (on rank 0 only,
    under torchrun: RANK), else it does nothing."""
    if total < PROGRESS_FROM_BYTES or os.environ.get("RANK", "0") != "0":
        yield lambda count: None
        return
    from tqdm.auto import tqdm  # here, not above: the command line's checks import this module before heavy ones

    lock = threading.Lock()  # threads add to one count
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hashing weights",
              dynamic_ncols=True) as bar:
        def advance(count: int) -> None:
            with lock:
                bar.update(count)

        yield advance


def keep_digest(stored: Path, digest: str) -> None:
    """Written whole or not at all (files.write_atomic); a store that cannot be written is only skipped."""
    try:
        write_atomic(stored, lambda stream: stream.write(digest))
    except OSError:
        pass
