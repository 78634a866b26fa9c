"""evalkit against lm-evaluation-harness's own HFLM on the same model, one process, JSON with both timings, their
ratio, the figures compared, and the CPU's model and flags:

- multiple choice: HFLM.loglikelihood on the same four-choice questions (built from WikiText-2 lines) against
  task=multiple_choice; per-choice log-likelihoods and is_greedy compared;
- per-document perplexity: HFLM.loglikelihood_rolling on WikiText-2's first --articles articles (lm-eval's wikitext
  detokenizer) against task=wikitext_documents with the same windows; summed log-likelihoods compared.

    python benchmarks/lm_eval_comparison.py --out outputs/bench_lm_eval.json
    python benchmarks/lm_eval_comparison.py --device cuda --dtype bfloat16 --random-shape random-gpt2-large \
        --tokenizer .bench/tokenizer --data-dir .bench --questions 2000 --articles 1000 --lm-eval-batch 16 64 128
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import evalkit
from evalkit.config.presets import model_spec
from evalkit.evaluators.multiple_choice.questions import Question, shared
from evalkit.evaluators.perplexity.documents import articles, wikitext_detokenize
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import resolve_location

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
WIKITEXT = "wikitext-2-raw/wiki.test.raw"


def questions_from(path: Path, count: int) -> list[Question]:
    """Four choices per question: the true next words after a 40-word context, and three spans from elsewhere."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if len(line.split()) > 60]
    rng = np.random.default_rng(0)
    questions = []
    for k in range(count):
        words = lines[k % len(lines)]
        spans = [words[40:40 + n] for n in (4, 6, 5, 7)]
        others = [lines[(k + j) % len(lines)][10:10 + len(span)] for j, span in enumerate(spans[1:], 1)]
        choices = [" ".join(span) for span in [spans[0], *others]]
        order = rng.permutation(4)
        questions.append(shared(" ".join(words[:40]), [choices[i] for i in order], int(np.argmax(order == 0))))
    return questions


def run_evalkit(folder: Path, args, task: str, **settings) -> tuple[dict, list[dict]]:
    """evalkit as a user runs it (the runner, batch_size=auto), twice: the first run's kernels for new shapes are
    warm in the second, as lm-eval's are after its warm-up call. The second run's record (with the first's time) and
    samples."""
    common = dict(model=args.spec, task=task, device=args.device, dtype=args.dtype, cache_dir=None, **settings)
    first = evalkit.evaluate(**common)
    record = evalkit.evaluate(**common, out_dir=folder / task)
    record["timing"]["first_run_eval_seconds"] = first["timing"]["eval_seconds"]
    return record, [json.loads(line) for line in (folder / task / "samples.jsonl").read_text().splitlines()]


def against_lm_eval(plain, tokenizer, method: str, requests: list, batches: list[int], max_length: int,
                    seconds: float, compare) -> dict:
    """lm-eval's HFLM.<method> on the requests at each batch size: its time, evalkit's speedup, compare(results)."""
    rows = {}
    for batch in batches:
        lm = HFLM(pretrained=plain, tokenizer=tokenizer, batch_size=batch, max_length=max_length,
                  device=str(next(plain.parameters()).device))
        getattr(lm, method)(requests[:2])  # warm-up
        started = time.perf_counter()
        theirs = getattr(lm, method)(requests)
        reference_seconds = time.perf_counter() - started
        rows[f"batch{batch}"] = {"seconds": reference_seconds, "speedup": reference_seconds / seconds,
                                 **compare(theirs)}
        print(f"{method} lm-eval batch {batch}: {reference_seconds:.1f} s; evalkit {seconds:.1f} s; "
              f"{reference_seconds / seconds:.2f}x; {compare(theirs)}", flush=True)
    return {"evalkit_seconds": seconds, "lm_eval": rows,
            "speedup_vs_best_lm_eval": min(row["seconds"] for row in rows.values()) / seconds}


def multiple_choice(folder: Path, args, plain, tokenizer) -> dict:
    questions = questions_from(Path(args.data_dir) / WIKITEXT, args.questions)
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps({"context": q.contexts[0], "choices": q.choices, "gold": q.gold}) + "\n"
                            for q in questions), encoding="utf-8")
    record, samples = run_evalkit(folder, args, "multiple_choice", **{"task.path": str(path)})
    ours = [(ll, greedy) for sample in samples for ll, greedy in zip(sample["loglikelihoods"], sample["is_greedy"])]
    requests = [Instance("loglikelihood", {}, (c, t), i)
                for q in questions for i, (c, t) in enumerate(zip(q.contexts, q.continuations))]

    def compare(theirs) -> dict:
        return {"max_abs_loglikelihood_difference": max(abs(a[0] - b[0]) for a, b in zip(ours, theirs)),
                "max_relative_loglikelihood_difference": max(abs(a[0] - b[0]) / abs(b[0])
                                                             for a, b in zip(ours, theirs)),
                "same_is_greedy": all(a[1] == b[1] for a, b in zip(ours, theirs))}

    return {"questions": len(questions), "choices": len(requests), "evalkit_batch_size": record["timing"]["batch_size"],
            "evalkit_first_run_seconds": record["timing"]["first_run_eval_seconds"],
            **against_lm_eval(plain, tokenizer, "loglikelihood", requests, args.lm_eval_batch,
                              record["model"]["context_length"] or 2048, record["timing"]["eval_seconds"], compare)}


def documents(folder: Path, args, plain, tokenizer) -> dict:
    window = args.window  # lm-eval's max_length; evalkit's windows hold one more token (the prefix / context)
    record, _ = run_evalkit(folder, args, "wikitext_documents", data_dir=args.data_dir, limit=args.articles,
                            max_length=window + 1, stride=window)
    raw = (Path(args.data_dir) / WIKITEXT).read_text(encoding="utf-8")
    pages = [page for page in articles(raw.splitlines(keepends=True))
             if page.strip()][: args.articles]
    requests = [Instance("loglikelihood_rolling", {}, (wikitext_detokenize(page),), i) for i, page in enumerate(pages)]
    ours = record["metrics"]["nll_sum"]

    def compare(theirs) -> dict:
        return {"nll_relative_difference": abs(ours + sum(theirs)) / ours}

    return {"articles": len(pages), "tokens_scored": record["metrics"]["tokens_scored"], "window": window,
            "evalkit_batch_size": record["timing"]["batch_size"],
            "evalkit_first_run_seconds": record["timing"]["first_run_eval_seconds"],
            **against_lm_eval(plain, tokenizer, "loglikelihood_rolling", requests, args.lm_eval_batch, window,
                              record["timing"]["eval_seconds"], compare)}


def save_random(args, folder: Path) -> dict:
    """A random-init preset's weights (seed 0) and --tokenizer saved as a model folder both sides load."""
    preset = model_spec(args.random_shape)
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(preset["architecture"], **preset["config"])
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(folder)
    return {"name": args.random_shape, "name_or_path": str(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct-q4_1")
    parser.add_argument("--random-shape", help="a random-init preset instead (e.g. random-gpt2-large), saved once")
    parser.add_argument("--tokenizer", help="with --random-shape: a local tokenizer folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--parts", nargs="+", default=["multiple_choice", "documents"])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--articles", type=int, default=6)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--lm-eval-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", default="outputs/bench_lm_eval.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        args.spec = model_spec(args.model) if not args.random_shape else save_random(args, Path(folder) / "weights")
        location = resolve_location(args.spec)  # lm-eval gets the weights the way its users load them
        dtype = getattr(torch, args.dtype) if args.dtype != "auto" else torch.float32
        plain = transformers.AutoModelForCausalLM.from_pretrained(
            location.path, dtype=dtype, **location.from_pretrained_kwargs()).to(args.device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(location.path, **location.from_pretrained_kwargs())
        report = {"benchmark": f"lm-eval-comparison-{args.device}", "model": args.random_shape or args.model,
                  "dtype": args.dtype, "torch_threads": torch.get_num_threads(), "hardware": hardware(),
                  "versions": library_versions()}
        for part in args.parts:
            report[part] = {"multiple_choice": multiple_choice, "documents": documents}[part](
                Path(folder), args, plain, tokenizer)
            write_json(Path(args.out), report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("hardware", "versions")}, indent=1))


if __name__ == "__main__":
    main()
