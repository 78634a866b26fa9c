"""The perplexity evaluator against the plain HF docs loop on random-init GPT-2 and LLaMA models."""

import math

import pytest
import torch
import transformers
from conftest import WIKITEXT, patch_jobs

import evalkit
from evalkit import evaluators
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.loading import LoadOptions, load_model
from evalkit.scoring.logprobs import position_chunks
from evalkit.scoring.pairs import batch_scores
from evalkit.scoring.probes import output_split
from evalkit.scoring.rolling import score_windows
from oracles import docs_loop_nll, docs_loop_perplexity

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
    count = NUM_TOKENS if stride > 1 else MAX_LENGTH + 20  # stride 1: a window a token; 20 of them show it
    tokens = tokens[:count]
    windows = window_schedule(count, MAX_LENGTH, stride)
    nll = score_windows(ours, tokens, windows, batch_size)[0]["nll"]
    if (plain, stride) not in reference_cache:  # one reference run serves every batch size
        reference_cache[plain, stride] = docs_loop_nll(plain, tokens, windows)
    reference = reference_cache[plain, stride]
    assert sum(w.num_targets for w in windows) == count - 1
    assert math.isclose(float(nll.sum()), math.fsum(reference), rel_tol=1e-6)
    assert torch.allclose(nll, torch.tensor(reference, dtype=torch.float64), rtol=1e-5)


def test_bos_per_window_equals_docs_loop(models, tokens):
    ours, plain = models
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 128, bos_per_window=True)
    nll = score_windows(ours, tokens, windows, 3, bos_token_id=1)[0]["nll"]
    reference = math.fsum(docs_loop_nll(plain, tokens, windows, bos_token_id=1))
    assert math.isclose(float(nll.sum()), reference, rel_tol=1e-6)


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
    monkeypatch.setattr("evalkit.scoring.rolling.CPU_AUTO_BATCH", 16)
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


def test_a_model_spread_by_a_device_map_scores_the_one_device_nll(tiny_gpt2_dir, tokens, tmp_path):
    """Under a device map over several devices the last hidden states sit on another device than the inputs, and
    accelerate moves every tensor argument of the whole model's forward to its first device: a tensor
    `logits_to_keep` then indexes states on another GPU and fails. So a spread model never gets one: it runs as
    body, then output layer at the scored positions. Here accelerate runs the second block and final norm from the
    disk: the one-device figures, bit for bit, and no tensor index handed to the whole model."""
    layout = {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu", "transformer.h.0": "cpu",
              "transformer.h.1": "disk", "transformer.ln_f": "disk", "lm_head": "cpu"}  # lm_head is tied to wte
    plain = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    spread = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, device_map=layout,
                                                               offload_folder=str(tmp_path)).eval()
    index_arguments = []
    spread.register_forward_pre_hook(
        lambda module, args, kwargs: index_arguments.append(torch.is_tensor(kwargs.get("logits_to_keep"))),
        with_kwargs=True)
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 128)
    spread_nll = score_windows(spread, tokens, windows, 2)[0]["nll"]
    assert torch.equal(spread_nll, score_windows(plain, tokens, windows, 2)[0]["nll"])
    assert not any(index_arguments)


def test_large_logits_run_in_chunks_of_scored_positions_with_the_same_nll(models, tokens, monkeypatch):
    """Past LOGIT_BUDGET (scored rows x vocabulary) the output layer runs over chunks of scored positions: the same
    per-token NLL, with the output layer called once per chunk."""
    ours, plain = models
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 7)
    whole = score_windows(ours, tokens, windows, 3)[0]["nll"]
    calls = []
    hook = ours.get_output_embeddings().register_forward_hook(lambda module, args, out: calls.append(out.shape[:-1]))
    # 50 positions of 3 windows
    monkeypatch.setattr("evalkit.scoring.logprobs.LOGIT_BUDGET", 3 * 50 * ours.config.vocab_size)
    try:
        chunked = score_windows(ours, tokens, windows, 3)[0]["nll"]
    finally:
        hook.remove()
    rows = [shape.numel() for shape in calls]  # the output layer's rows per call: 3 windows x 50 positions at most
    assert output_split(ours) is not None and max(rows) == 150 and len(rows) > len(windows) / 3
    assert torch.allclose(chunked, whole, rtol=1e-6)


def test_cpu_log_softmax_in_chunks_changes_no_number(models, tokens, monkeypatch):
    """On a CPU the float32 log-softmax runs over chunks of positions (nll.position_chunks): the NLLs of windows and
    the (log-likelihood, is_greedy) pairs of choices are bit-identical to one log-softmax over all positions."""
    ours, _ = models
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 7)
    pairs = [[(tokens[:40].tolist(), tokens[40:45].tolist()), (tokens[:40].tolist(), tokens[45:47].tolist())],
             [(tokens[50:60].tolist(), tokens[60:90].tolist())]]
    chunks = position_chunks(torch.empty(3, MAX_LENGTH, ours.config.vocab_size, dtype=torch.bfloat16))
    chunked = (score_windows(ours, tokens, windows, 3)[0]["nll"], batch_scores(ours, pairs, MAX_LENGTH, False))
    monkeypatch.setattr("evalkit.scoring.logprobs.CPU_LOG_SOFTMAX_ELEMENTS", 1 << 62)
    whole = (score_windows(ours, tokens, windows, 3)[0]["nll"], batch_scores(ours, pairs, MAX_LENGTH, False))
    assert len(chunks) > 1 and torch.equal(chunked[0], whole[0]) and chunked[1] == whole[1]


def test_a_model_that_caps_its_logits_is_not_split(tokens, monkeypatch):
    """The output layer alone would give other logits than the model (here Gemma-2's final soft-capping): no chunks."""
    config = transformers.Gemma2Config(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                       num_key_value_heads=1, head_dim=16, vocab_size=49152,
                                       final_logit_softcapping=5.0)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    windows = window_schedule(NUM_TOKENS, MAX_LENGTH, 256)
    monkeypatch.setattr("evalkit.scoring.logprobs.LOGIT_BUDGET", 1)
    assert output_split(model) is None
    nll = score_windows(model, tokens, windows, 2)[0]["nll"]
    assert math.isclose(float(nll.sum()), math.fsum(docs_loop_nll(model, tokens, windows)), rel_tol=1e-6)


def test_the_warm_up_runs_under_inference_mode_as_the_timed_pass(tiny_gpt2_dir, monkeypatch):
    """The untimed first window readies what the timed pass runs: under inference_mode, as that pass is."""
    modes = []

    def warm_up(original, todo):
        modes.append(torch.is_inference_mode_enabled())
        return original(todo)

    patch_jobs(monkeypatch, evaluators.get("perplexity"), "warm_up", warm_up)
    evalkit.evaluate(model=str(tiny_gpt2_dir), task="text", **{"task.path": str(WIKITEXT)}, limit=200,
                     max_length=64, stride=32, device="cpu", cache_dir=None)
    assert modes == [True]
