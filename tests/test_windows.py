import itertools

import pytest

from evalkit.errors import EvalkitError
from evalkit.windows import window_schedule


def test_wikitext_gpt2_schedule():
    windows = window_schedule(287_644, max_length=1024, stride=512)
    assert len(windows) == 561
    assert sum(w.num_targets for w in windows) == 287_643


@pytest.mark.parametrize("bos_per_window", [False, True])
def test_every_token_scored_exactly_once(bos_per_window):
    for num_tokens, max_length, stride in itertools.product([2, 3, 10, 101, 1000], [2, 3, 8, 64], [1, 2, 5, 8, 64]):
        if stride > max_length or (bos_per_window and max_length < 2):
            continue
        windows = window_schedule(num_tokens, max_length, stride, bos_per_window=bos_per_window)
        scored = [t for w in windows for t in range(w.target_begin, w.end)]
        first = 0 if bos_per_window else 1
        assert scored == list(range(first, num_tokens)), (num_tokens, max_length, stride)
        for w in windows:
            assert w.length + bos_per_window <= max_length
            assert w.begin <= w.target_begin < w.end
            if not bos_per_window:
                assert w.target_begin > w.begin  # at least one token of context inside the window
        assert windows[-1].end == num_tokens


def test_windows_start_every_stride():
    windows = window_schedule(5000, max_length=1024, stride=256)
    assert [w.begin for w in windows[:4]] == [0, 256, 512, 768]
    assert windows[1].target_begin == 1024 and windows[1].num_targets == 256


def test_stride_equal_to_max_length_carries_one_token():
    windows = window_schedule(10, max_length=4, stride=4)
    assert [(w.begin, w.end, w.target_begin) for w in windows] == [(0, 4, 1), (3, 7, 4), (6, 10, 7)]


@pytest.mark.parametrize("stride", [0, -1, 1025])
def test_bad_stride(stride):
    with pytest.raises(EvalkitError, match=f"stride={stride}"):
        window_schedule(5000, max_length=1024, stride=stride)


def test_single_token_is_rejected():
    with pytest.raises(EvalkitError, match="1 token"):
        window_schedule(1, max_length=1024, stride=512)
