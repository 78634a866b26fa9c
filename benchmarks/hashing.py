"""A large file's sha256 from a cold page cache (evalkit.hashing, what a checkpoint's first fingerprint costs) against
the seconds a plain read of it takes, alternating, the file's pages dropped from the page cache before every pass
(posix_fadvise DONTNEED, which needs no privilege); and the hash alone on bytes in memory, the rate the CPU allows.
Where the hash is slower than the disk, the fingerprint costs more than the read; where it is faster, the kernel's
read-ahead hides it. Writes JSON.

    python benchmarks/hashing.py --gib 4 --out X.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from evalkit.files import write_json
from evalkit.hashing import sha256_each
from evalkit.job.results import hardware


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def plain_read(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        while handle.read(1 << 26):
            pass


def evalkit_reader(path: Path) -> str:
    os.environ["EVALKIT_DIGEST_CACHE"] = ""  # no stored digest: every pass reads
    return sha256_each([path])[0]


def timed_cold(method, path: Path) -> float:
    import evalkit.hashing

    evalkit.hashing._REMEMBERED.clear()  # the process's own memory of digests, or the second pass reads nothing
    drop_from_page_cache(path)
    started = time.perf_counter()
    method(path)
    return time.perf_counter() - started


def hash_in_memory_rate() -> float:
    data = os.urandom(1 << 28)
    started = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    path = args.folder / "evalkit-hashing-benchmark.bin"
    size = int(args.gib * (1 << 30))
    with open(path, "wb") as handle:
        for _ in range(size // (1 << 26)):
            handle.write(os.urandom(1 << 26))
        os.fsync(handle.fileno())
    try:
        methods = {"plain_read": plain_read, "evalkit_sha256": evalkit_reader}
        seconds = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, method in methods.items():
                seconds[name].append(timed_cold(method, path))
        medians = {name: statistics.median(values) for name, values in seconds.items()}
        report = {"benchmark": "sha256 of a file from a cold page cache against reading it",
                  "hardware": hardware(), "file_bytes": path.stat().st_size, "seconds": seconds,
                  "median_seconds": medians,
                  "hash_in_memory_bytes_per_second": hash_in_memory_rate(),
                  "over_plain_read": {name: medians[name] / medians["plain_read"] for name in medians}}
    finally:
        path.unlink()
    write_json(args.out, report)
    print(report["median_seconds"], report["over_plain_read"])


if __name__ == "__main__":
    main()
