"""The command line: `python -m evalkit model=... task=... key=value ...` (Hydra; `--help` is the manual).

The first line reaches the screen before torch and transformers are imported (seconds on a small machine), and the
Hub is probed once, before any library would retry it."""

from __future__ import annotations

import os
import sys

from evalkit.cli import noise, startup


def say(line: str | None) -> None:
    if line and os.environ.get("RANK", "0") == "0":  # under torchrun, once
        print(line, file=sys.stderr, flush=True)


def main() -> None:
    argv = sys.argv[1:]
    if "--version" in argv:  # evalkit's own, not Hydra's
        from evalkit import __version__

        print(f"evalkit {__version__}")
        return
    if "--help" in argv or "-h" in argv:
        from evalkit.cli.manual import manual

        print(manual())
        return
    say(startup.announcement(argv))
    say(startup.go_offline_if_unreachable())
    noise.quiet("verbose=true" in argv)  # before torch and transformers are imported: some noise comes at import
    from evalkit.cli.command import run

    run(argv)


if __name__ == "__main__":
    main()
