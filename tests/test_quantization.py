"""Quantized models against a reference: KL(reference || model), top-1 agreement, delta perplexity."""

import json
import math

import pytest
import torch
import transformers
from conftest import WIKITEXT, run_cli

import evalkit
from evalkit import evaluators
from evalkit.errors import EvalkitError
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.loading import LoadOptions, load_model
from evalkit.scoring.rolling import score_windows


@torch.inference_mode()
def full_logits_divergence(model, reference, tokens, windows):
    """Per window: KL(reference || model) summed over scored tokens and top-1 agreements, from full logits
    (float32 log-softmax as the evaluator specifies, sums in float64)."""
    kl, agree = [], []
    for w in windows:
        ids = tokens[w.begin : w.end].unsqueeze(0)
        scored = slice(w.target_begin - w.begin - 1, w.length - 1)
        log_p = model(ids).logits[0, scored].float().log_softmax(-1)
        log_q = reference(ids).logits[0, scored].float().log_softmax(-1)
        kl.append(float((log_q.exp() * (log_q - log_p)).double().sum()))
        agree.append(int((log_p.argmax(-1) == log_q.argmax(-1)).sum()))
    return kl, agree


def test_kl_and_agreement_equal_full_logits(tiny_llama_dir):
    reference = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():  # a different model of the same shape: perturbed weights
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    tokens = torch.randint(0, 49152, (700,), generator=torch.Generator().manual_seed(3))
    windows = window_schedule(len(tokens), 256, 100)
    scores, _ = score_windows(model, tokens, windows, 2, reference=reference)
    kl, agree = full_logits_divergence(model, reference, tokens, windows)
    assert torch.allclose(scores["kl_sum"], torch.tensor(kl, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    assert scores["top1_agree"].tolist() == agree
    assert 0 < sum(agree) < len(tokens) - 1  # the perturbation changed some predictions, not all
    assert [len(row) for row in scores["token_kl"]] == [w.num_targets for w in windows]


def test_mismatched_tokenizer_is_rejected(tmp_path, tiny_llama_dir):
    other = tmp_path / "other"
    transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(other)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.add_tokens(["<an-extra-token>"])
    tokenizer.save_pretrained(other)
    with pytest.raises(EvalkitError, match="another tokenizer"):  # on the CLI one line, exit 2 (as test_cli's cases)
        evalkit.evaluate(**{"model.name_or_path": str(tiny_llama_dir)}, reference_model=str(other), task="text",
                         **{"task.path": str(WIKITEXT)}, limit=300, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


def test_torchao_int8_sweep_against_reference(tmp_path, tiny_llama_dir):
    """quantization=none (the model against itself: zero KL, full agreement) and torchao-int8, one sweep."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", f"model.name_or_path={tiny_llama_dir}", "quantization=none,torchao-int8",
                     f"reference_model={tiny_llama_dir}", "task=text", f"task.path={WIKITEXT}", "limit=600",
                     "max_length=128", "stride=64", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    none, int8 = (json.loads((sweep / str(job) / "results.json").read_text()) for job in (0, 1))
    assert none["model"]["quantization"]["scheme"] == "none"
    metrics = none["metrics"]  # the model against itself
    assert metrics["kl_mean"] == 0.0 and metrics["kl_max"] == 0.0 and metrics["top1_agreement"] == 1.0
    assert metrics["delta_ppl"] == 0.0 and metrics["kl_mean_ci95"] == [0.0, 0.0]
    assert set(metrics) <= evaluators.get("perplexity").metric_keys()  # the catalogue names the reference's figures
    assert int8["model"]["quantization"] == {"scheme": "torchao-int8", "backend": "torchao",
                                             "method": "int8 weight-only, per-channel scales", "source_format": None}
    assert 0 < int8["metrics"]["kl_mean"] < 0.05 and int8["metrics"]["top1_agreement"] > 0.8
    assert math.isclose(int8["metrics"]["reference_perplexity"], none["metrics"]["perplexity"], rel_tol=1e-9)


@pytest.mark.parametrize("scheme", ["int8", "int4", "torchao-int4"])
def test_cuda_only_schemes_fail_up_front_on_cpu(tiny_llama_dir, scheme):
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match=f"quantization={scheme}.*needs a CUDA device"):
        load_model({"name_or_path": str(tiny_llama_dir)}, LoadOptions(device="cpu", quantization=scheme), "causal-lm")
