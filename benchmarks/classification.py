"""Zero-shot classification speed against the plain references, same model and inputs, one process; writes JSON.

    python benchmarks/classification.py --out outputs/bench_classification.json

- loglikelihood: the packaged SmolLM2-135M on the first 200 SST-2 dev sentences, evalkit's CausalLM.loglikelihood vs
  lm-evaluation-harness's HFLM.loglikelihood (batch 16) on the same (prompt, label) pairs;
- nli: a random-init DistilBERT-base-shaped MNLI classifier (the packaged MiniLM tokenizer, or --nli-tokenizer), 500
  AG News texts x 4 labels, evalkit in each of --nli-dtypes vs transformers' zero-shot-classification pipeline
  (float32). bfloat16 pays only on CPUs with bfloat16 instructions (AVX512-BF16, AMX); the record holds the CPU's.

    python benchmarks/classification.py --methods nli --nli-tokenizer DIR --nli-dtypes float32,bfloat16 --out X.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracles: tests/oracles.py

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from evalkit.config.presets import model_spec
from evalkit.data import load_examples
from evalkit.evaluators.classification.methods import nli_scores
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import LoadOptions, load_model, resolve_location
from evalkit.scoring.causal_lm import CausalLM
from oracles import pipeline_nli_scores  # noqa: E402 (tests/ joins the path first)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".." / "shared" / "data"


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def compare(name, reference, ours, reference_seconds, seconds, count):
    reference, ours = np.asarray(reference), np.asarray(ours)
    return {
        "examples": count,
        "reference": {"name": name, "seconds": reference_seconds, "examples_per_second": count / reference_seconds},
        "evalkit": {"seconds": seconds, "examples_per_second": count / seconds},
        "speedup": reference_seconds / seconds,
        "max_abs_score_difference": float(np.abs(reference - ours).max()),
        "same_predictions": bool((reference.argmax(1) == ours.argmax(1)).all()),
    }


def loglikelihood_benchmark(count: int) -> dict:
    spec = model_spec("smollm2-135m-instruct-q4_1")
    loaded = load_model(spec, LoadOptions(device="cpu"), "causal-lm")
    plain = transformers.AutoModelForCausalLM.from_pretrained(loaded.provenance["location"],
                                                              gguf_file=loaded.provenance["gguf_file"]).eval()
    task = {"name": "sst2", "data_file": "classification/sst2/stsa.binary.dev", "format": "label_first",
            "text_field": "text", "label_field": "label", "labels": ["negative", "positive"]}
    texts = load_examples(task, str(DATA), count).texts
    pairs = [(f"Review: {text}\nSentiment:", label) for text in texts for label in (" negative", " positive")]
    lm = HFLM(pretrained=plain, tokenizer=loaded.tokenizer, batch_size=16, device="cpu")
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    reference, reference_seconds = timed(lambda: lm.loglikelihood(requests))
    ours, seconds = timed(lambda: CausalLM(loaded).loglikelihood(pairs, 16))
    reference, ours = ([ll for ll, _ in scores] for scores in (reference, ours))
    return compare("lm-evaluation-harness HFLM.loglikelihood (batch 16)", np.reshape(reference, (-1, 2)),
                   np.reshape(ours, (-1, 2)), reference_seconds, seconds, count)


def nli_benchmark(count: int, path: Path, tokenizer: str | None, dtypes: list[str]) -> dict:
    config = transformers.DistilBertConfig(label2id={"contradiction": 0, "neutral": 1, "entailment": 2},
                                           id2label={0: "contradiction", 1: "neutral", 2: "entailment"})
    torch.manual_seed(0)
    transformers.DistilBertForSequenceClassification(config).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(tokenizer or resolve_location(model_spec("minilm-l6-v2")).path
                                               ).save_pretrained(path)
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    task = {"name": "agnews", "data_file": "classification/agnews/test.csv", "format": "csv",
            "text_field": ["Title", "Description"], "label_field": "Class Index", "label_offset": 1,
            "labels": ["World", "Sports", "Business", "Sci/Tech"]}
    texts = load_examples(task, str(DATA), count).texts
    template = "This news article is about {}."
    hypotheses = [template.format(label) for label in task["labels"]]
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    reference, reference_seconds = timed(
        lambda: pipeline_nli_scores(plain, tokenizer, texts, task["labels"], template, False)
    )
    rows = {}
    for dtype in dtypes:
        loaded = load_model({"name": "random-distilbert-mnli", "name_or_path": str(path)},
                            LoadOptions(device="cpu", dtype=dtype), "sequence-classification")
        ours, seconds = timed(lambda: nli_scores(loaded.model, loaded.tokenizer, texts, hypotheses, False, 16))
        rows[dtype] = compare("transformers zero-shot-classification pipeline (batch 1, float32)", reference, ours,
                              reference_seconds, seconds, count)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="loglikelihood,nli")
    parser.add_argument("--loglikelihood-examples", type=int, default=200)
    parser.add_argument("--nli-examples", type=int, default=500)
    parser.add_argument("--nli-tokenizer", help="a tokenizer folder instead of the packaged MiniLM's")
    parser.add_argument("--nli-dtypes", default="float32")
    parser.add_argument("--out", default="outputs/bench_classification.json")
    args = parser.parse_args()
    methods = args.methods.split(",")
    report = {"benchmark": "zero-shot classification"}
    if "loglikelihood" in methods:
        report["loglikelihood"] = loglikelihood_benchmark(args.loglikelihood_examples)
    if "nli" in methods:
        report["nli"] = nli_benchmark(args.nli_examples, Path(args.out).parent / "random-distilbert-mnli",
                                      args.nli_tokenizer, args.nli_dtypes.split(","))
    report.update(hardware=hardware(), versions=library_versions())
    write_json(Path(args.out), report)
    rows = {"loglikelihood": report.get("loglikelihood")} | {f"nli {k}": v for k, v in report.get("nli", {}).items()}
    for name, row in rows.items():
        if row:
            print(f"{name}: {row['speedup']:.2f}x (reference {row['reference']['seconds']:.1f} s, evalkit "
                  f"{row['evalkit']['seconds']:.1f} s), max score difference {row['max_abs_score_difference']:.2e}, "
                  f"same predictions: {row['same_predictions']}")


if __name__ == "__main__":
    main()
