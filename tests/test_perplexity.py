"""The perplexity evaluator against the plain HF docs loop on random-init GPT-2 and LLaMA models."""

import math

import pytest
import torch
import transformers

from evalkit.loading import LoadOptions, load_model
from evalkit.nll import score_windows
from evalkit.reference import docs_loop_nll, docs_loop_perplexity
from evalkit.windows import window_schedule

MAX_LENGTH = 300
NUM_TOKENS = 640  # with strides 7 and 256 the last window is shorter than MAX_LENGTH


@pytest.fixture(scope="module", params=["tiny_gpt2_dir", "tiny_llama_dir"])
def models(request):
    """(evalkit's model as the loading layer gives it, the same weights loaded plainly by transformers)."""
    path = request.getfixturevalue(request.param)
    ours = load_model({"name": request.param, "name_or_path": str(path)}, LoadOptions(device="cpu"), "causal-lm")
    plain = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return ours.model, plain


@pytest.fixture(scope="module")
def reference_cache():
    return {}


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 49152, (NUM_TOKENS,), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("stride", [1, 7, 256, MAX_LENGTH])
@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
def test_equals_docs_loop(models, tokens, reference_cache, stride, batch_size):
    ours, plain = models
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, stride)
    nll = score_windows(ours, tokens, windows, batch_size)[0]["nll"]
    if (plain, stride) not in reference_cache:  # one reference run serves every batch size
        reference_cache[plain, stride] = docs_loop_nll(plain, tokens, windows)
    reference = reference_cache[plain, stride]
    assert sum(w.num_targets for w in windows) == NUM_TOKENS - 1
    assert math.isclose(float(nll.sum()), math.fsum(reference), rel_tol=1e-6)
    assert torch.allclose(nll, torch.tensor(reference, dtype=torch.float64), rtol=1e-5)


def test_bos_per_window_equals_docs_loop(models, tokens):
    ours, plain = models
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 128, bos_per_window=True)
    nll = score_windows(ours, tokens, windows, 3, bos_token_id=1)[0]["nll"]
    assert math.isclose(float(nll.sum()), math.fsum(docs_loop_nll(plain, tokens, windows, bos_token_id=1)), rel_tol=1e-6)


def test_schedule_equals_the_docs_loops_own(models, tokens):
    ours, plain = models
    nll_sum, n_tokens = docs_loop_perplexity(plain, tokens, MAX_LENGTH, 128)
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 128)
    nll = score_windows(ours, tokens, windows, 2)[0]["nll"]
    assert n_tokens == NUM_TOKENS - 1
    assert math.isclose(float(nll.sum()), nll_sum, rel_tol=1e-6)


class OutOfMemoryOnce(torch.nn.Module):
    """Wraps a model and raises CUDA's out-of-memory error for any batch larger than `fits`."""

    def __init__(self, model, fits):
        super().__init__()
        self.model, self.fits, self.batches = model, fits, []

    def forward(self, input_ids, **kwargs):
        if len(input_ids) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.batches.append(len(input_ids))
        return self.model(input_ids=input_ids, **kwargs)


def test_auto_batch_halves_on_out_of_memory(models, tokens, monkeypatch):
    ours, plain = models
    monkeypatch.setattr("evalkit.nll.CPU_AUTO_BATCH", 16)
    wrapped = OutOfMemoryOnce(ours, fits=5)
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 32)
    scores, size = score_windows(wrapped, tokens, windows, "auto")
    nll = scores["nll"]
    assert size <= 5 and max(wrapped.batches) == size  # halved (12 -> 6 -> 3) until a batch fit
    assert math.isclose(float(nll.sum()), math.fsum(docs_loop_nll(plain, tokens, windows)), rel_tol=1e-6)


def test_explicit_batch_size_does_not_hide_out_of_memory(models, tokens):
    ours, _ = models
    with pytest.raises(torch.OutOfMemoryError):
        score_windows(OutOfMemoryOnce(ours, fits=2), tokens, window_schedule(NUM_TOKENS, MAX_LENGTH, 32), 3)
