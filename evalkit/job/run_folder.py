"""A run's folder, claimed before anything is written into it.

The claim is a lock on the folder's `.evalkit-claim` file (flock: released by the kernel when the process ends, even
by kill -9). A second run given the same folder while the first holds it is refused with one line, as is a folder
that already holds a finished result or files of a run that no claim covers; the first run's files are never
touched. A folder whose claim was left by a run that stopped without a result is taken over, saying so. Only after
the claim does the run write: the config snapshot (the command line's `.hydra/`), its log (evalkit.log: every line
the run shows on stderr and every log record), its samples and results. A run that ends without a result removes
what it wrote, and the folder when that leaves it empty; anything else in it stays.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from evalkit.errors import EvalkitError

CLAIM = ".evalkit-claim"
LOG = "evalkit.log"
RUN_FILES = ("results.json", "samples.jsonl", LOG, ".hydra")  # what a run writes into its folder


def open_claim(folder: Path) -> int:
    """An open, locked claim file in `folder`; EvalkitError when another process holds it."""
    while True:
        handle = os.open(folder / CLAIM, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(handle, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(handle)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise EvalkitError(f"{folder} is in use by another run ({holder}); runs never share a folder: choose "
                                   "another (hydra.run.dir=DIR, out_dir=DIR)") from None
            raise
        try:
            same = os.stat(folder / CLAIM, follow_symlinks=False).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the run that held it removed it meanwhile: claim afresh
            return handle
        os.close(handle)


def claim(folder: Path) -> tuple[int, str | None]:
    """Claim `folder` for this run: (the locked claim file, a line when a stopped run's folder is taken over)."""
    if folder.exists() and not folder.is_dir():
        raise EvalkitError(f"{folder} is a file, not a folder; a run writes its files into a folder: choose another "
                           "(hydra.run.dir=DIR, out_dir=DIR)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        left = (folder / CLAIM).exists()
        handle = open_claim(folder)
    except OSError as error:
        raise EvalkitError(f"{folder} cannot be written ({error.strerror}); choose another folder") from None
    try:
        if (folder / "results.json").exists():
            raise EvalkitError(f"{folder} already holds a finished result (results.json), which a run never "
                               "replaces; choose another folder (hydra.run.dir=DIR, out_dir=DIR)")
        if not left and (found := [name for name in RUN_FILES if (folder / name).exists()]):
            raise EvalkitError(f"{folder} already holds {', '.join(found)}, written by no run of this one's; choose "
                               "another folder (hydra.run.dir=DIR, out_dir=DIR)")
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"pid {os.getpid()}, started {started}\n".encode(), 0)
    except BaseException:
        os.close(handle)
        raise
    taken = f"evalkit: taking over {folder}, left without a result by a run that stopped" if left else None
    return handle, taken


def discard(folder: Path) -> None:
    """Remove what a run that ended without a result wrote (its files only), and the folder if that empties it."""
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    (folder / CLAIM).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty: never anything the run did not write


class LogFile:
    """The run's log file, which never fails the run: a write it refuses (a full disk) ends the log, not the run."""

    def __init__(self, path: Path):
        self.stream = open(path, "a", encoding="utf-8")

    def write(self, text: str) -> None:
        if self.stream is not None:
            try:
                self.stream.write(text)
                self.stream.flush()  # the log is read while the run lasts, and must survive its being killed
            except OSError:
                self.close()

    def flush(self) -> None:  # written through already; logging's handlers ask
        pass

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None


class Tee:
    """sys.stderr that also writes each finished line to the run's log (of a progress bar redrawn with carriage
    returns, its last state)."""

    def __init__(self, screen, log: LogFile):
        self.screen, self.log, self.pending = screen, log, ""

    def write(self, text: str) -> int:
        self.screen.write(text)
        *lines, self.pending = (self.pending + text).split("\n")
        self.log.write("".join(shown + "\n" for line in lines if (shown := line.rsplit("\r", 1)[-1]).strip()))
        return len(text)

    def flush(self) -> None:
        self.screen.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding: the terminal's
        return getattr(self.screen, name)


@contextlib.contextmanager
def logged(folder: Path) -> Iterator[None]:
    """evalkit.log holds what the run shows on stderr and every log record, while the run lasts."""
    try:
        log = LogFile(folder / LOG)
    except OSError as error:
        raise EvalkitError(f"could not write the run's log into {folder} ({error.strerror})") from None
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    screen = sys.stderr
    logging.getLogger().addHandler(handler)
    sys.stderr = Tee(screen, log)
    try:
        yield
    finally:
        sys.stderr = screen
        logging.getLogger().removeHandler(handler)
        log.close()  # a library that kept the tee as its stream writes to the screen alone from now on


@contextlib.contextmanager
def claimed(folder: Path | None, snapshot: Callable[[Path], None] | None = None) -> Iterator[None]:
    """The run's folder claimed (None: nothing to claim), the snapshot written and the log kept while the run lasts;
    without a result, what the run wrote is removed."""
    if folder is None:
        yield
        return
    handle, taken = claim(folder)
    finished = False
    try:
        with logged(folder):
            if taken:
                print(taken, file=sys.stderr)
            if snapshot is not None:
                try:
                    snapshot(folder)
                except OSError as error:
                    raise EvalkitError(f"could not write the config snapshot into {folder} ({error.strerror})") \
                        from None
            yield
            finished = (folder / "results.json").exists()
    finally:
        if finished:
            (folder / CLAIM).unlink(missing_ok=True)
        else:
            discard(folder)
        os.close(handle)


def hydra_snapshot(task_config) -> Callable[[Path], None] | None:
    """What Hydra would write into `.hydra/` (the config, Hydra's config, the overrides), for the run to write once
    its folder is claimed: config.yaml sets hydra.output_subdir to null so that Hydra does not write it before. None
    when the command line sets hydra.output_subdir itself (null: no snapshot; a folder: Hydra wrote it)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_config = HydraConfig.instance().cfg
    overrides = hydra_config.hydra.overrides
    if any(override.lstrip("+~").startswith("hydra.output_subdir") for override in overrides.hydra):
        return None
    nodes = {"config.yaml": task_config, "hydra.yaml": hydra_config, "overrides.yaml": overrides.task}
    texts = {name: OmegaConf.to_yaml(node) for name, node in nodes.items()}  # now: the task may change its config

    def write(folder: Path) -> None:
        (folder / ".hydra").mkdir(exist_ok=True)
        for name, text in texts.items():
            (folder / ".hydra" / name).write_text(text, encoding="utf-8")

    return write
