import itertools

import pytest

from evalkit.errors import EvalkitError
from evalkit.evaluators.perplexity.windows import document_windows, window_schedule


def test_wikitext_gpt2_schedule():
    windows = window_schedule(287_644, max_length=1024, stride=512)
    assert len(windows) == 561
    assert sum(w.num_targets for w in windows) == 287_643


@pytest.mark.parametrize("full_last", [False, True])
@pytest.mark.parametrize("bos_per_window", [False, True])
def test_every_token_scored_exactly_once(bos_per_window, full_last):
    for num_tokens, max_length, stride in itertools.product([2, 3, 10, 101, 1000], [2, 3, 8, 64], [1, 2, 5, 8, 64]):
        if stride > max_length or (bos_per_window and max_length < 2):
            continue
        windows = window_schedule(num_tokens, max_length, stride, bos_per_window=bos_per_window, full_last=full_last)
        scored = [t for w in windows for t in range(w.target_begin, w.end)]
        first = 0 if bos_per_window else 1
        assert scored == list(range(first, num_tokens)), (num_tokens, max_length, stride)
        for w in windows:
            assert w.length + bos_per_window <= max_length
            assert w.begin <= w.target_begin < w.end
            if not bos_per_window:
                assert w.target_begin > w.begin  # at least one token of context inside the window
        assert windows[-1].end == num_tokens
        if full_last:  # the final window holds a full context, or the whole stream when it is shorter
            assert windows[-1].length + bos_per_window == min(max_length, num_tokens + bos_per_window)


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


def test_a_one_token_document_is_named():
    from evalkit.evaluators.perplexity import document_names

    names = document_names(["A long first\n document.", "Hi", "Third."])
    assert names[1] == "document 2 of 3 ('Hi')" and names[0] == "document 1 of 3 ('A long first document.')"
    with pytest.raises(EvalkitError, match=r"^document 2 of 3 \('Hi'\) has 1 token\(s\): nothing to score"):
        document_windows([5, 1, 5], max_length=8, stride=4, names=names)


def test_full_last_window_reaches_back():
    short = window_schedule(11, max_length=4, stride=3)
    full = window_schedule(11, max_length=4, stride=3, full_last=True)
    assert [(w.begin, w.end, w.target_begin) for w in short][-1] == (9, 11, 10)
    assert [(w.begin, w.end, w.target_begin) for w in full][-1] == (7, 11, 10)
    assert short[:-1] == full[:-1]


@pytest.mark.parametrize("full_last", [False, True])
def test_documents_get_their_own_windows(full_last):
    lengths = [7, 2, 40, 13]
    windows, owners = document_windows(lengths, max_length=8, stride=5, full_last=full_last)
    starts = [sum(lengths[:k]) for k in range(len(lengths))]
    for document, (start, length) in enumerate(zip(starts, lengths)):
        mine = [w for w, owner in zip(windows, owners) if owner == document]
        assert all(start <= w.begin and w.end <= start + length for w in mine)  # never across a boundary
        scored = [t for w in mine for t in range(w.target_begin, w.end)]
        assert scored == list(range(start + 1, start + length))  # each token after the document's first, once
    assert document_windows([640], 300, 7) == (window_schedule(640, 300, 7), [0] * len(window_schedule(640, 300, 7)))
