"""Reading a user's files safely and writing ours whole or not at all, as the user's umask says. Pure: no torch.

A file evalkit reads (data, manifests, caches, results) must be a regular file of bounded size: a FIFO would block the
read forever and a device (/dev/zero) would read until memory runs out, so both are refused with one line before any
byte is read (the file is opened non-blocking, then checked, so a FIFO never blocks even if it replaced the file in
between). JSON nested deeper than Python's parser can follow is one line too."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path

from evalkit.errors import EvalkitError

GiB = 1 << 30
DATA_LIMIT = 8 * GiB  # a data file read whole: more than memory on most machines a run would fit on
RECORD_LIMIT = 256 << 20  # one results.json or key.json: a large MMLU results.json is a few MB


def read_bytes(path: Path, limit: int, what: str = "") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; EvalkitError (one line) for anything else."""
    name = f"{what} {path}" if what else str(path)
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open would block until a writer comes
    except OSError as error:
        raise EvalkitError(f"{name} cannot be read ({error.strerror})") from None
    with os.fdopen(handle, "rb") as stream:
        status = os.fstat(handle)
        if not stat.S_ISREG(status.st_mode):
            raise EvalkitError(f"{name} is not a regular file (a {kind(status.st_mode)}); evalkit reads only files")
        if status.st_size > limit:
            raise EvalkitError(f"{name} is {status.st_size:,} bytes, more than the {limit:,} evalkit reads from one "
                               "file; split it")
        os.set_blocking(handle, True)
        try:
            data = stream.read(limit + 1)  # a file growing while read is still cut at the limit
        except OSError as error:
            raise EvalkitError(f"{name} cannot be read ({error.strerror})") from None
    if len(data) > limit:
        raise EvalkitError(f"{name} grew past the {limit:,} bytes evalkit reads from one file while it was read")
    return data


def kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))
    return next((name for test, name in kinds if test(mode)), "special file")


def check_regular(path: Path, what: str = "") -> None:
    """Refuse (one line) a path that is not a regular file, without opening it: for files a library opens itself
    (soundfile), which a FIFO would block."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise EvalkitError(f"{what + ' ' if what else ''}{path} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        raise EvalkitError(f"{what + ' ' if what else ''}{path} is not a regular file (a {kind(mode)}); evalkit reads "
                           "only files")


def read_text(path: Path, limit: int = DATA_LIMIT, what: str = "") -> str:
    """A regular file's UTF-8 text (newlines as written; a leading byte-order mark, as Excel writes CSV, is no
    text); one line of error for anything else."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise EvalkitError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split on "\\n" only (a "\\r" before it is JSON whitespace). str.splitlines also
    splits on U+2028, U+0085 and other characters that JSON strings may hold raw."""
    return text.split("\n")


def parse_json(text: str, where: str):
    """json.loads, with nesting too deep for the parser as one line (json raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise EvalkitError(f"{where} is nested too deeply to read") from None


def umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def follow_umask(path: Path, folder: bool = False) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode open() and mkdir() give: what
    the umask allows, so a team sharing a filesystem reads each other's results."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


class Sha256Writer(io.BufferedIOBase):
    """A binary file that keeps the sha256 of the bytes written through it: a file's digest without reading it back."""

    def __init__(self, file):
        super().__init__()
        self.file, self.sha256 = file, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        try:
            super().close()  # flushes first
        finally:
            self.file.close()


def write_atomic(path: Path, write, binary: bool = False, exclusive: bool = False) -> str:
    """Write through a temporary file in the same folder, then rename: readers see the old file or the whole new one.
    `exclusive`: never replace an existing file (FileExistsError instead). Returns the sha256 of the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        follow_umask(Path(temporary))  # mkstemp's 0600 would keep a team on a shared filesystem out
        file = Sha256Writer(os.fdopen(handle, "wb"))
        with file if binary else io.TextIOWrapper(file, encoding="utf-8") as stream:  # as open(..., "w") would
            write(stream)
        if exclusive:
            os.link(temporary, path)  # fails if the file exists, atomically
            os.unlink(temporary)
        else:
            os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return file.sha256.hexdigest()


def strict_json(obj, **kwargs) -> str:
    """JSON as every reader accepts it: a NaN or infinity is an error, never written as a bare NaN."""
    return json.dumps(obj, allow_nan=False, default=str, **kwargs)


def write_json(path: Path, obj: dict, exclusive: bool = False) -> str:
    text = strict_json(obj, indent=2)
    return write_atomic(path, lambda stream: stream.write(text), exclusive=exclusive)
