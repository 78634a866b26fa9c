"""The strided sliding-window schedule for perplexity: which tokens each window reads and which it scores.

Pure functions of integers, so the schedule can be checked without a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class Window:
    """Input tokens [begin, end) of the stream; the window scores (predicts) tokens [target_begin, end)."""

    begin: int
    end: int
    target_begin: int

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def num_targets(self) -> int:
        return self.end - self.target_begin


def check_window_args(max_length: int, stride: int) -> None:
    if not isinstance(max_length, int) or max_length < 2:
        raise EvalkitError(f"max_length={max_length} is not allowed; allowed: an integer >= 2")
    if stride <= 0 or stride > max_length:
        raise EvalkitError(f"stride={stride} is not allowed; allowed: 1 <= stride <= max_length ({max_length})")


def window_schedule(num_tokens: int, max_length: int, stride: int, bos_per_window: bool = False,
                    full_last: bool = False, text: str = "the text") -> list[Window]:
    """Windows of at most `max_length` inputs starting every `stride` tokens, together scoring each token once.

    Without a per-window BOS, token 0 has no context and is never scored, and every scored token needs at least one
    token of context inside its window: so windows must overlap by one token, and a stride equal to max_length
    advances by max_length - 1 (the one token of context is carried over). With `bos_per_window`, each window is
    prefixed by a BOS token (which counts towards max_length) that serves as context, so every token is scored.
    `full_last`: the final window reaches back to a full `max_length` of context (lm-evaluation-harness's rolling
    windows) instead of starting on the stride grid (the HF docs schedule); it scores the same tokens. `text`: what
    the tokens are, as an error names them.
    """
    check_window_args(max_length, stride)
    span = max_length - 1 if bos_per_window else max_length  # stream tokens per window
    step = min(stride, span) if bos_per_window else min(stride, span - 1)
    first_target = 0 if bos_per_window else 1
    if num_tokens <= first_target:
        raise EvalkitError(f"{text} has {num_tokens} token(s): nothing to score (at least {first_target + 1} "
                          "needed)")
    windows = []
    scored_until = first_target
    for begin in range(0, num_tokens, step):
        end = min(begin + span, num_tokens)
        if end == num_tokens and full_last:
            begin = max(0, end - span)
        windows.append(Window(begin, end, scored_until))
        scored_until = end
        if end == num_tokens:
            break
    return windows


def document_windows(lengths: list[int], max_length: int, stride: int, bos_per_window: bool = False,
                     full_last: bool = False, names: list[str] | None = None) -> tuple[list[Window], list[int]]:
    """Windows over documents laid end to end in one token stream: each document gets its own schedule (no window
    reads across a boundary), shifted to where the document starts; and the document of each window. `names`: how an
    error names each document (else the stream is one text)."""
    windows, owners, offset = [], [], 0
    for document, length in enumerate(lengths):
        text = names[document] if names else "the text"
        for w in window_schedule(length, max_length, stride, bos_per_window, full_last, text):
            windows.append(Window(w.begin + offset, w.end + offset, w.target_begin + offset))
            owners.append(document)
        offset += length
    return windows, owners
