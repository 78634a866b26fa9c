"""Where the leaderboard may write: never into, over or above the runs it reads, and never over a folder it did not
make. Its folder is marked by MARKER (as build tools mark their output folders); a folder that holds anything else
is left alone, and the exports replace only a folder that is the leaderboard's, all at once (a fresh folder renamed
into place)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.files import follow_umask

MARKER = ".evalkit-leaderboard"
MARKER_TEXT = "This folder is written by `python -m evalkit.leaderboard`; a rebuild replaces it whole.\n"
OWN_ENTRIES = {MARKER, "leaderboard.json", "leaderboard.md", "leaderboard.csv", "index.html", "lm_eval", "plots"}
DEFAULT_NAME = "leaderboard"  # OUTPUTS/leaderboard, the default: the only place inside the runs it may go


def check_output(source: Path, out: Path) -> None:
    """Refuse an output folder that is the runs' folder, holds it, lies inside it (other than the default), is a
    file, or holds anything the leaderboard did not write."""
    runs, target = source.resolve(), out.resolve()
    if target.exists() and not target.is_dir():
        raise EvalkitError(f"-o {out} is a file; give a folder for the exports")
    if target == runs or target in runs.parents:
        raise EvalkitError(f"-o {out} holds the runs it would be built from ({source}); give a folder outside them")
    if runs in target.parents and target != runs / DEFAULT_NAME:
        raise EvalkitError(f"-o {out} lies inside the runs' folder {source}; give a folder outside it (or leave -o "
                           f"out for {source / DEFAULT_NAME})")
    try:
        entries = sorted(entry.name for entry in target.iterdir()) if target.is_dir() else []
    except OSError as error:
        raise EvalkitError(f"cannot read -o {out} ({error.strerror})") from None
    foreign = [name for name in entries if name not in OWN_ENTRIES]
    if foreign or (entries and not {MARKER, "leaderboard.json"} & set(entries)):
        shown = foreign or entries
        raise EvalkitError(f"-o {out} holds {', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}, which the "
                           "leaderboard did not write; give a new or empty folder (it replaces only its own)")


def replace_folder(out: Path, fill: Callable[[Path], None]) -> None:
    """fill(a fresh folder beside `out`), marked as the leaderboard's, then put in place of `out`: readers see the
    old exports or all of the new ones."""
    target = out.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(staging)
        (staging / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
        follow_umask(staging, folder=True)  # mkdtemp makes it 0700: the exports are for a team to read
        if target.is_dir() and any(target.iterdir()):
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.replace(target)  # an empty folder is replaced as one step
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
