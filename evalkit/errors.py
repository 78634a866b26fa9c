class EvalkitError(Exception):
    """A problem with the user's input or environment: the CLI prints its message as one line and exits non-zero."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during the scoring: says how many finished units were saved for a rerun to resume from."""

    def __init__(self, saved: int, resumable: bool):
        super().__init__(saved)
        self.saved, self.resumable = saved, resumable

    def __str__(self) -> str:
        if not self.resumable:
            return "nothing was saved (the result cache is off: cache_dir=null)"
        return f"{self.saved} finished units are saved; rerunning the same command resumes from them"
