"""The command line as users run it: real Hydra runs in a subprocess, the packaged model, the shared WikiText-2."""

import json
import math

import pytest
import torch

from conftest import SMOL_GGUF, WIKITEXT, read_samples, run_cli, run_results
from evalkit.reference import docs_loop_perplexity


def wikitext_hub_text() -> str:
    """The hub split's text rebuilt by hand: one row per line, a whitespace-only line an empty row, joined by \\n\\n."""
    with open(WIKITEXT, encoding="utf-8") as handle:
        rows = [line if line.strip() else "" for line in handle]
    return "\n\n".join(rows)


def test_packaged_model_on_wikitext_equals_docs_loop(tmp_path, smol):
    run_dir = tmp_path / "run"
    result = run_cli(f"data_dir={WIKITEXT.parent.parent}", "limit=4096", "stride=512", "max_length=1024",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    record = json.loads((run_dir / "results.json").read_text())
    metrics = record["metrics"]

    model, tokenizer = smol
    input_ids = torch.tensor(tokenizer(wikitext_hub_text()).input_ids[:4096])
    nll_sum, n_tokens = docs_loop_perplexity(model, input_ids, max_length=1024, stride=512)

    assert metrics["tokens_scored"] == n_tokens == 4095
    assert math.isclose(metrics["nll_sum"], nll_sum, rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(nll_sum / n_tokens), rel_tol=1e-5)
    assert metrics["windows"] == 7 and metrics["stride"] == 512 and metrics["max_length"] == 1024

    samples = read_samples(run_dir)
    assert len(samples) == 7
    assert math.isclose(math.fsum(s["nll"] for s in samples), metrics["nll_sum"], rel_tol=1e-12)
    assert sum(s["tokens_scored"] for s in samples) == 4095

    model_record = record["model"]
    assert model_record["source"] == "packaged" and model_record["gguf_file"] == SMOL_GGUF
    assert len(model_record["weights_sha256"]) == 64 and model_record["parameters"] > 100_000_000
    assert record["data"]["origin"] == str(WIKITEXT.resolve()) and len(record["data"]["sha256"]) == 64
    assert record["versions"]["torch"] and record["versions"]["transformers"]
    assert record["hardware"]["cpu_count"] and record["timing"]["tokens_per_second"] > 0
    assert record["config"]["stride"] == 512 and record["config"]["model"]["name"] == "smollm2-135m"
    for noise in ("Failed to load", "Enum subclass", "Detected no triton"):  # known-harmless, hidden
        assert noise not in result.stdout + result.stderr, noise
    lines = result.stdout.splitlines()
    summary = lines[lines.index("smollm2-135m on wikitext (perplexity):"):]  # the human summary, from the catalogue
    assert any(line.split()[:2] == ["perplexity", f"{metrics['perplexity']:.4f}"] and "lower is better" in line
               for line in summary)


def test_local_text_file_and_jsonl_give_one_stream(tmp_path, tiny_gpt2_dir):
    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": text[:900]}) + "\n" + json.dumps({"text": text[900:]}))
    figures = []
    for name, join in (("a.txt", "\n\n"), ("a.jsonl", "")):
        record = run_results(tmp_path / f"run-{name}", f"model.name_or_path={tiny_gpt2_dir}", "task=text",
                             f"task.path={tmp_path / name}", f"task.join='{join}'", "max_length=64", "stride=32")
        assert record["model"]["name"] == str(tiny_gpt2_dir)  # labelled by the path it was given
        figures.append(record["metrics"]["nll_sum"])
    assert math.isclose(figures[0], figures[1], rel_tol=1e-9)


def test_compile_gives_the_eager_figures(tmp_path, tiny_gpt2_dir):
    """compile=true through the CLI: compiled blocks, output layer and NLL; the same figures as eager."""
    common = [f"model.name_or_path={tiny_gpt2_dir}", "task=text", f"task.path={WIKITEXT}", "limit=2000",
              "max_length=64", "stride=32", "batch_size=8"]
    eager = run_results(tmp_path / "eager", *common)
    compiled = run_results(tmp_path / "compiled", *common, "compile=true")
    assert "GPT2Block blocks + output layer" in compiled["model"]["compile"]
    assert compiled["metrics"]["tokens_scored"] == eager["metrics"]["tokens_scored"]
    assert math.isclose(compiled["metrics"]["nll_sum"], eager["metrics"]["nll_sum"], rel_tol=1e-5)


def test_help_and_cfg_job():
    help_text = run_cli("--help").stdout  # a manual: every key with its default, meaning and allowed values
    assert "smollm2-135m: " in help_text and "wikitext (perplexity): " in help_text
    for key in ("limit=null", "dtype=auto", "stride=512", "method=null", "num_beams=1"):
        assert f"\n  {key}\n" in help_text, key
    assert "(allowed: auto, float32, bfloat16, float16)" in help_text
    job = run_cli("model=gpt2-large", "task=wikitext", "stride=256", "--cfg", "job")
    assert job.returncode == 0 and "stride: 256" in job.stdout and "openai-community/gpt2-large" in job.stdout


def bad_inputs(tmp_path, tiny_gpt2_dir, tiny_bert_dir):
    empty, one_token = tmp_path / "empty.txt", tmp_path / "one.txt"
    empty.write_text("  \n\n")
    one_token.write_text("Hello")
    tiny = f"model.name_or_path={tiny_gpt2_dir}"
    text_task = ["task=text", f"task.path={WIKITEXT}", "limit=300"]
    return {
        "stride=0": ([tiny, *text_task, "stride=0"], "stride=0"),
        "stride>max_length": ([tiny, *text_task, "max_length=64", "stride=65"], "stride=65"),
        "stride=true": ([tiny, *text_task, "stride=true"], "stride=true is not allowed"),
        # the default model's context (8192, from its GGUF) is known before its weights are read
        "max_length>context of the default model": (["max_length=9000", "stride=512"], "max_length=9000"),
        "max_length>context": ([tiny, *text_task, "max_length=513", "stride=8"], "max_length=513"),
        "unknown model": (["model=no-such-model"], "no-such-model"),
        "unknown task": (["task=no-such-task"], "no-such-task"),
        "missing file": ([tiny, "task=text", "task.path=/no/such/file.txt"], "/no/such/file.txt"),
        "empty text": ([tiny, "task=text", f"task.path={empty}"], "no text"),
        "one token": ([tiny, "task=text", f"task.path={one_token}"], "1 token"),
        "non-causal": ([f"model.name_or_path={tiny_bert_dir}", *text_task], "not causal"),
        "int8 on cpu": ([tiny, *text_task, "quantization=int8", "device=cpu"], "quantization=int8"),
        "wikitext offline": ([tiny, "data_dir=null"], "task.path=FILE"),
        "unknown compile mode": ([tiny, *text_task, "compile=fast"], "compile=fast"),
        "onednn with compile": ([tiny, *text_task, "cpu_linear=onednn", "compile=true"], "cpu_linear=onednn"),
        # mixed keys once broke the result cache's key (unsortable); no GPU 0 on the CI machine
        "max_memory on a missing GPU": ([tiny, *text_task, "device_map=auto", "max_memory={0:1GiB,cpu:4GiB}"],
                                        "max_memory names '0'"),
    }


BAD_CASES = ["stride=0", "stride>max_length", "stride=true", "max_length>context of the default model", "max_length>context", "unknown model", "unknown task", "missing file",
             "empty text", "one token", "non-causal", "int8 on cpu", "wikitext offline", "unknown compile mode",
             "onednn with compile", "max_memory on a missing GPU"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_clearly(tmp_path, tiny_gpt2_dir, tiny_bert_dir, case):
    overrides, expected = bad_inputs(tmp_path, tiny_gpt2_dir, tiny_bert_dir)[case]
    run_dir = tmp_path / "run"
    result = run_cli(*overrides, f"hydra.run.dir={run_dir}", env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert expected in result.stderr
    assert not (run_dir / "results.json").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr and result.returncode == 2
