"""Known-harmless third-party noise, silenced where it is raised, so that evalkit's own lines, progress bars and real
problems are what reaches the terminal; `verbose=true` shows everything. Set up before torch is imported."""

from __future__ import annotations

import functools
import logging

# loggers whose warnings are about optional kernels evalkit does not use (torchao's CUDA extensions, Triton) or about
# deprecations inside other libraries (torch's pytree registrations made by torchao)
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")
# transformers warns on every Whisper generate call that evalkit passes generation arguments beside the model's own
# generation_config; that is how the explicit num_beams/task/language settings reach generate
NOTICES = {"transformers.generation.utils": "Passing `generation_config` together with generation-related arguments"}


@functools.cache  # once per process: the API may be called many times, and each call would add the filters again
def quiet(verbose: bool = False) -> None:
    """Silence the notices above, unless `verbose`."""
    if verbose:
        return
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name, notice in NOTICES.items():
        logging.getLogger(name).addFilter(lambda record, notice=notice: notice not in record.getMessage())
