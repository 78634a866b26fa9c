"""generate_until against lm-evaluation-harness's HFLM.generate_until (the independent reference): the same
continuations, stop strings cut the same way, on random-init GPT-2 and LLaMA shapes with the packaged tokenizer."""

import json
from pathlib import Path

import pytest
import transformers
from conftest import SHARED_DATA
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from evalkit.errors import EvalkitError
from evalkit.scoring.decoding import Decoder, decode
from evalkit.scoring.generation import Sampling, cut_at_stop, generate_until, stop_strings
from evalkit.scoring.static_decoding import StaticDecoder

PROMPTS = [
    "Question: Natalia sold clips to 48 of her friends in April. How many clips did she sell?\nAnswer:",
    "The capital of France is",
    "def add(a, b):\n    return",
    "1, 2, 3, 4,",
    "Once upon a time there was a small village near the sea, where every morning the fishermen",
]
MAX_LENGTH, MAX_GEN_TOKS = 256, 24


def lm_eval_generations(model, tokenizer, until: list[str], batch_size: int, prompts=PROMPTS) -> list[str]:
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=MAX_LENGTH, device="cpu")
    kwargs = {"until": until, "max_gen_toks": MAX_GEN_TOKS, "do_sample": False}
    return lm.generate_until([Instance("generate_until", {}, (prompt, dict(kwargs)), i)
                              for i, prompt in enumerate(prompts)])


@pytest.fixture(scope="module", params=["tiny_gpt2_dir", "tiny_llama_dir"])
def model_and_tokenizer(request):
    path = request.getfixturevalue(request.param)
    return (transformers.AutoModelForCausalLM.from_pretrained(path).eval(),
            transformers.AutoTokenizer.from_pretrained(path))


def a_stop_string(model, tokenizer) -> str:
    """A piece of text the model does generate for the first prompt (random weights say little of which), so that
    the stop strings really cut."""
    free = generate_until(model, tokenizer, PROMPTS[:1], [], MAX_GEN_TOKS, MAX_LENGTH)[0]
    return free[len(free) // 2: len(free) // 2 + 2]


def test_greedy_generations_equal_lm_eval(model_and_tokenizer):
    """In batches of 3: left padding and rows that stop at different steps."""
    model, tokenizer = model_and_tokenizer
    batch_size = 3
    until = [a_stop_string(model, tokenizer), "\n\n"]
    padding_side = tokenizer.padding_side
    ours = generate_until(model, tokenizer, PROMPTS, until, MAX_GEN_TOKS, MAX_LENGTH, batch_size=batch_size)
    assert tokenizer.padding_side == padding_side  # a tokenizer shared by a sweep's jobs is left as it was
    theirs = lm_eval_generations(model, tokenizer, until, batch_size)
    assert ours == theirs
    uncut = generate_until(model, tokenizer, PROMPTS, [], MAX_GEN_TOKS, MAX_LENGTH, batch_size=batch_size)
    assert any(cut != whole for cut, whole in zip(ours, uncut)), "no stop string cut any continuation"
    assert all(whole.startswith(cut) for cut, whole in zip(ours, uncut))


def test_shared_prefix_and_the_models_generation_config_as_lm_eval(model_and_tokenizer):
    """Prompts that begin alike (few-shot examples) run their common tokens once; logits processors from the model's
    generation config (here: the tokens each prompt would start with are suppressed) apply as `generate` applies
    them."""
    model, tokenizer = model_and_tokenizer
    prompts = ["Question: what is two and two?\nAnswer: four.\n\n" * 3 + prompt for prompt in PROMPTS]
    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    unsuppressed = decode(model, tokenizer, encoded, 1, Sampling().generate_kwargs(), None, lambda tokens: False)
    model.generation_config.suppress_tokens = sorted({tokens[0] for tokens in unsuppressed})
    try:
        ours = generate_until(model, tokenizer, prompts, [], MAX_GEN_TOKS, MAX_LENGTH, batch_size=len(prompts))
        theirs = lm_eval_generations(model, tokenizer, [], len(prompts), prompts)
    finally:
        model.generation_config.suppress_tokens = None
    assert ours == theirs
    assert ours != generate_until(model, tokenizer, prompts, [], MAX_GEN_TOKS, MAX_LENGTH, batch_size=len(prompts))


def test_static_cache_steps_decode_as_the_growing_cache(model_and_tokenizer):
    """The static cache (a 4-D mask written a slot a step; what a GPU replays as a CUDA graph) gives the growing
    cache's tokens: rows of several lengths stopping at different steps and leaving the batch."""
    model, tokenizer = model_and_tokenizer
    encoded = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]

    def run(decoder):
        return decode(model, tokenizer, encoded, MAX_GEN_TOKS, Sampling().generate_kwargs(), None,
                      lambda tokens: len(tokens) >= 4 + tokens[0] % 17, decoder)

    growing, static = run(Decoder(model)), run(StaticDecoder(model, MAX_GEN_TOKS, graphs=False))
    assert static == growing
    assert len({len(tokens) for tokens in growing}) > 2, "the rows did not stop at different steps"


def test_prompts_are_cut_from_the_left_to_leave_room_for_generation(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    long_prompt = " ".join(PROMPTS * 20)
    assert len(tokenizer(long_prompt)["input_ids"]) > MAX_LENGTH
    ours = generate_until(model, tokenizer, [long_prompt], [], MAX_GEN_TOKS, MAX_LENGTH)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=MAX_LENGTH, device="cpu")
    theirs = lm.generate_until([Instance("generate_until", {}, (long_prompt, {"max_gen_toks": MAX_GEN_TOKS,
                                                                              "until": [], "do_sample": False}), 0)])
    assert ours == theirs


def test_sampling_is_reproducible_and_differs_from_greedy(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    sampled = Sampling(do_sample=True, temperature=1.0, seed=7)
    first, again, greedy = (generate_until(model, tokenizer, PROMPTS[:2], [], MAX_GEN_TOKS, MAX_LENGTH, batch_size=2,
                                           sampling=how) for how in (sampled, sampled, Sampling()))
    assert first == again and first != greedy


def test_stop_strings_are_cut_as_lm_eval_cuts_them(smol_tokenizer_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    strings = stop_strings(tokenizer, ["Question:", "", "\n\n"])
    assert strings == ["Question:", "\n\n", tokenizer.decode([tokenizer.eos_token_id])]
    assert cut_at_stop("The answer is 4.\n\nQuestion: next", strings) == "The answer is 4."
    assert cut_at_stop("no stop here", strings) == "no stop here"


def test_no_room_for_a_prompt_is_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(EvalkitError, match="max_gen_toks leaves no room for a prompt"):
        generate_until(model, tokenizer, PROMPTS, [], 256, 256)


def lm_eval_gsm8k(test_file, lm, limit: int, max_gen_toks: int, apply_chat_template: bool) -> dict:
    """lm-eval's own evaluation of its gsm8k task definition (its YAML: filters, exact_match options, 5-shot from
    train) on local files: its results and per-document samples."""
    import lm_eval.tasks
    import yaml
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.evaluator import evaluate

    config = yaml.safe_load((Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml").read_text())
    config.update(task="gsm8k_local", dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {"train": str(SHARED_DATA / "gsm8k" / "train.jsonl"),
                                                 "test": str(test_file)}})
    config["generation_kwargs"]["max_gen_toks"] = max_gen_toks
    task = ConfigurableTask(config=config)
    task.set_fewshot_seed(1234)
    return evaluate(lm, {"gsm8k_local": task}, limit=limit, bootstrap_iters=0, log_samples=True,
                    apply_chat_template=apply_chat_template)


@pytest.mark.parametrize("apply_chat_template", [False, True])
def test_gsm8k_on_the_packaged_model_equals_lm_eval(smol, tmp_path, apply_chat_template):
    """The acceptance case: SmolLM2 (float32, CPU, greedy), lm-eval's gsm8k definition, 5-shot from the real train
    split; documents from the train split's tail stand in for the test split (not shipped here). Responses are cut at
    32 tokens on both sides to keep the test short (the task's 256 changes nothing but the time); two documents in
    one batch of two, so that one is left-padded."""
    import evalkit

    model, tokenizer = smol
    test_file = tmp_path / "test.jsonl"
    lines = (SHARED_DATA / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    test_file.write_text("\n".join(lines[-2:]), encoding="utf-8")
    ours = evalkit.evaluate(model="smollm2-135m", task="gsm8k", device="cpu", cache_dir=None, batch_size=2,
                            max_gen_toks=32, apply_chat_template=apply_chat_template,
                            data_dir=str(SHARED_DATA), out_dir=tmp_path / "run", **{"task.path": str(test_file)})
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2, device="cpu")
    theirs = lm_eval_gsm8k(test_file, lm, limit=2, max_gen_toks=32, apply_chat_template=apply_chat_template)
    logged = theirs["samples"]["gsm8k_local"]  # one per document and filter
    their_samples = sorted((sample for sample in logged if sample["filter"] == "strict-match"),
                           key=lambda sample: sample["doc_id"])
    our_samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in our_samples] == [s["arguments"][0][0] for s in their_samples]
    assert [s["responses"] for s in our_samples] == [s["resps"][0] for s in their_samples]
    for name in ("strict-match", "flexible-extract"):
        assert ours["metrics"]["filters"][name]["exact_match"] == theirs["results"]["gsm8k_local"][
            f"exact_match,{name}"]
