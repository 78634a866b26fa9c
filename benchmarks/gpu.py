"""GPU speed of every evaluator against its plain reference, same weights and inputs, one process; writes JSON.

- perplexity on gpt2-large's shape (random init): the HF docs loop in float32 and bfloat16, a plain batched loop,
  and evalkit's variants; every NLL checked against the float32 docs loop;
- zero-shot NLI on bart-large-mnli's shape (random init): the zero-shot-classification pipeline (batch 1 and 64)
  vs evalkit's batched pairs; scores compared;
- ASR on whisper-base's shape (random init, a fixed number of generated tokens): the ASR pipeline (batch 1) vs
  evalkit's batched transcription.

    python benchmarks/gpu.py --tokens-file ids.pt --tokenizer DIR --texts wiki.txt --bart-tokenizer DIR \
        --whisper DIR --out bench_gpu.json

`--tokens-file` holds a 1-D tensor of token ids (the first --tokens of it are used); `--tokenizer` is any local
tokenizer directory (only the loading layer needs one; the ids are given); `--texts` gives premises (its lines);
`--whisper` holds a Whisper config, generation config and processor. benchmarks/prepare_gpu_inputs.py makes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracles: tests/oracles.py

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import transformers
from classification import compare  # benchmarks/classification.py

from evalkit.config.presets import model_spec
from evalkit.evaluators.asr.transcriber import Transcriber
from evalkit.evaluators.classification.methods import nli_scores
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import LoadOptions, load_model
from evalkit.scoring.rolling import score_windows
from oracles import docs_loop_perplexity, pipeline_nli_scores  # noqa: E402 (tests/ joins the path first)


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, time.perf_counter() - started, torch.cuda.max_memory_allocated()


@torch.inference_mode()
def plain_batched_nll(model, tokens, windows, batch_size: int) -> float:
    """A straightforward batched loop: windows right-padded into batches, full logits, labels -100 on context and
    padding, the model's mean loss times the tokens it averaged."""
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        width = max(w.length for w in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, w in enumerate(chunk):
            input_ids[row, : w.length] = tokens[w.begin : w.end]
            labels[row, w.target_begin - w.begin : w.length] = tokens[w.target_begin : w.end]
            mask[row, : w.length] = 1
        labels = labels.to(device)
        loss = model(input_ids.to(device), attention_mask=mask.to(device), labels=labels).loss
        total += loss.double().item() * int((labels[:, 1:] != -100).sum())
    return total


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
            torch.randn(n, n, device="cuda", dtype=torch.bfloat16))
    a @ b
    _, seconds, _ = timed(lambda: [a @ b for _ in range(repeats)])
    return 2 * n**3 * repeats / seconds / 1e12


def forward_flops(model, windows) -> float:
    """Matrix FLOPs of evalkit's work: 2 x non-embedding params per token forwarded, causal attention (QK^T and AV,
    half the square), and the output layer at scored positions only."""
    config = model.config  # hidden_size and num_hidden_layers: GPT-2's config maps them to n_embd and n_layer
    tables = [*model.get_input_embeddings().parameters(), *model.get_output_embeddings().parameters(),
              *(p for n, p in model.named_parameters() if n.endswith("wpe.weight"))]  # looked up, not multiplied
    looked_up = sum(p.numel() for p in {id(p): p for p in tables}.values())  # a tied table counted once
    non_embedding = sum(p.numel() for p in model.parameters()) - looked_up
    forwarded = sum(w.length for w in windows)
    attention = sum(2 * config.num_hidden_layers * w.length**2 * config.hidden_size for w in windows)
    output_layer = 2 * config.vocab_size * config.hidden_size * sum(w.num_targets for w in windows)
    return 2 * non_embedding * forwarded + attention + output_layer


def nli_benchmark(texts: list[str], tokenizer_dir: str, batch_size: int = 64) -> dict:
    """bart-large-mnli's shape, random init, bfloat16: 4 labels per text."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    labels = {"contradiction": 0, "neutral": 1, "entailment": 2}
    config = transformers.BartConfig(
        vocab_size=len(tokenizer), d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.eos_token_id, label2id=labels, id2label={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = transformers.BartForSequenceClassification(config).to("cuda", torch.bfloat16).eval()
    candidates, template = ["World", "Sports", "Business", "Sci/Tech"], "This text is about {}."
    hypotheses = [template.format(label) for label in candidates]
    nli_scores(model, tokenizer, texts[:64], hypotheses, False, batch_size)  # warm-ups
    pipeline_nli_scores(model, tokenizer, texts[:8], candidates, template, False)
    ours, seconds, memory = timed(lambda: nli_scores(model, tokenizer, texts, hypotheses, False, batch_size))
    report = {"shape": "bart-large-mnli", "labels": len(candidates), "evalkit_batch_size": batch_size,
              "evalkit_peak_memory_gib": memory / 2**30}
    for reference_batch in (1, 64):
        reference, reference_seconds, _ = timed(
            lambda: pipeline_nli_scores(model, tokenizer, texts, candidates, template, False, reference_batch))
        report[f"pipeline_batch{reference_batch}"] = compare(
            f"zero-shot-classification pipeline, batch {reference_batch}", reference, ours, reference_seconds,
            seconds, len(texts))
    return report


def asr_benchmark(whisper_dir: str, durations: list[float], new_tokens: int, batch_size: int = 16) -> dict:
    """whisper-base's shape, random init, float16; noise clips of the given durations; every clip decodes exactly
    `new_tokens` tokens (min = max), so both sides do the same decoding work."""
    processor = transformers.AutoProcessor.from_pretrained(whisper_dir)
    config = transformers.AutoConfig.from_pretrained(whisper_dir)
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).to("cuda", torch.float16).eval()
    model.generation_config = transformers.GenerationConfig.from_pretrained(whisper_dir)
    rate = processor.feature_extractor.sampling_rate
    generator = torch.Generator().manual_seed(0)
    audio = [(torch.randn(int(d * rate), generator=generator) * 0.1).numpy() for d in durations]
    transcribe = Transcriber(model, processor, seq2seq=True)
    transcribe.generate_kwargs.update(min_new_tokens=new_tokens, max_new_tokens=new_tokens)
    pipe = transformers.pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                                 feature_extractor=processor.feature_extractor, device="cuda", dtype=torch.float16)
    kwargs = {"generate_kwargs": transcribe.generate_kwargs}
    pipe(audio[0], **kwargs), transcribe(audio[:batch_size])  # warm-ups
    reference, reference_seconds, _ = timed(lambda: [pipe(a, **kwargs)["text"].strip() for a in audio])
    ours, seconds, memory = timed(lambda: [text for start in range(0, len(audio), batch_size)
                                           for text in transcribe(audio[start : start + batch_size])])
    total = sum(durations)
    return {"shape": "whisper-base", "clips": len(audio), "audio_seconds": total, "new_tokens_per_clip": new_tokens,
            "reference": {"name": "ASR pipeline, batch 1", "seconds": reference_seconds,
                          "rtfx": total / reference_seconds},
            "evalkit": {"batch_size": batch_size, "seconds": seconds, "rtfx": total / seconds,
                        "peak_memory_gib": memory / 2**30},
            "speedup": reference_seconds / seconds,
            "identical_transcripts": sum(a == b for a, b in zip(reference, ours))}


def shape_matmul_seconds(config, windows, rows: int = 64 * 1024) -> float:
    """Seconds the model's own matrix multiplies (per block: qkv, attention output, MLP up and down; the output layer
    at scored positions) take alone at their real shapes: a floor that counts cuBLAS's efficiency at those shapes."""
    width, vocab = config.n_embd, config.vocab_size
    seconds = 0.0
    for k, n in ((width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)):
        a = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        a @ b
        _, s, _ = timed(lambda: [a @ b for _ in range(10)])
        seconds += s / 10 / rows * sum(w.length for w in windows) * config.n_layer
    a = torch.randn(rows // 2, width, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(vocab, width, device="cuda", dtype=torch.bfloat16)
    torch.nn.functional.linear(a, b)
    _, s, _ = timed(lambda: [torch.nn.functional.linear(a, b) for _ in range(10)])
    return seconds + s / 10 / (rows // 2) * sum(w.num_targets for w in windows)


def stream_parser(description: str, max_length: int, stride: int) -> argparse.ArgumentParser:
    """The arguments of a perplexity benchmark over a token-id stream (WikiText-2's ids by default)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tokens-file", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--tokens", type=int, default=287_644)
    parser.add_argument("--max-length", type=int, default=max_length)
    parser.add_argument("--stride", type=int, default=stride)
    return parser


def main() -> None:
    parser = stream_parser(__doc__.splitlines()[0], 1024, 512)
    parser.add_argument("--skip-slow", action="store_true", help="leave out the float32 docs loop")
    parser.add_argument("--variants", default="evalkit_bfloat16_auto,evalkit_bfloat16_compile_b32")
    parser.add_argument("--texts", help="NLI premises, one per line (leave out to skip NLI)")
    parser.add_argument("--nli-examples", type=int, default=1000)
    parser.add_argument("--bart-tokenizer", help="a tokenizer with BART's pair template")
    parser.add_argument("--whisper", help="Whisper config/processor folder (leave out to skip ASR)")
    parser.add_argument("--asr-new-tokens", type=int, default=64)
    parser.add_argument("--weights-dir", default="/tmp/evalkit-random-gpt2-large", help="where the weights are saved")
    parser.add_argument("--out", default="bench_gpu.json")
    args = parser.parse_args()

    tokens = torch.load(args.tokens_file)[: args.tokens].long()
    windows = window_schedule(len(tokens), args.max_length, args.stride)
    scored = sum(w.num_targets for w in windows)
    preset = model_spec("random-gpt2-large")

    # one set of weights for every variant: saved once, and evalkit loads them from disk as a user's model would
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(preset["architecture"], **preset["config"])
    plain32 = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).cuda().eval()
    weights = Path(args.weights_dir)
    plain32.save_pretrained(weights)
    transformers.AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(weights)
    spec = {"name": "random-gpt2-large", "name_or_path": str(weights)}
    plain16 = copy.deepcopy(plain32).to(torch.bfloat16)
    peak = matmul_tflops()
    flops = forward_flops(plain32, windows)
    shape_floor = shape_matmul_seconds(config, windows)
    rows: dict[str, dict] = {}
    others: dict[str, dict] = {}

    def record(name, nll, seconds, memory, **extra):
        rows[name] = {"seconds": seconds, "tokens_per_second": scored / seconds, "nll_sum": nll,
                      "peak_memory_gib": memory / 2**30, **extra}
        print(f"{name:40s} {seconds:8.3f} s  nll={nll:.6f}  {extra}", flush=True)

    if not args.skip_slow:
        (nll, _), s, m = timed(lambda: docs_loop_perplexity(plain32, tokens, args.max_length, args.stride))
        record("docs_loop_float32", nll, s, m)
    (nll, _), s, m = timed(lambda: docs_loop_perplexity(plain16, tokens, args.max_length, args.stride))
    record("docs_loop_bfloat16", nll, s, m)
    nll, s, m = timed(lambda: plain_batched_nll(plain16, tokens, windows, 32))
    record("plain_batched_bfloat16_b32", nll, s, m)
    if args.texts:
        lines = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines()]
        premises = [line for line in lines if len(line.split()) >= 8 and not line.startswith("=")][: args.nli_examples]
        others["nli"] = nli_benchmark(premises, args.bart_tokenizer)
        print("nli", json.dumps(others["nli"]), flush=True)
    if args.whisper:
        durations = [2.0 + (29.0 - 2.0) * ((7 * k) % 37) / 36 for k in range(64)]  # 2 s .. 29 s, spread evenly
        others["asr"] = asr_benchmark(args.whisper, durations, args.asr_new_tokens)
        print("asr", json.dumps(others["asr"]), flush=True)

    loaded_models = {}

    def evalkit_variant(name, dtype="bfloat16", batch_size="auto", memory_fraction=None, runs=2, **options):
        options = LoadOptions(device="cuda", dtype=dtype, **options)
        if options not in loaded_models:
            loaded_models.clear()  # one evalkit model on the card at a time
            torch.cuda.empty_cache()
            loaded_models[options] = load_model(spec, options, "causal-lm")
        loaded = loaded_models[options]
        if memory_fraction:
            torch.cuda.set_per_process_memory_fraction(memory_fraction)
        for run in range(runs):  # the first run includes compilation / kernel autotuning / allocator warm-up
            (scores, size), s, m = timed(lambda: score_windows(loaded.model, tokens, windows, batch_size,
                                                                  compile_nll=bool(options.compile)))
            nll = scores["nll"]
            record(f"{name}_run{run + 1}", float(nll.sum()), s, m, batch_size=size,
                   tflops=flops / s / 1e12, fraction_of_floor=flops / peak / 1e12 / s,
                   fraction_of_shape_floor=shape_floor / s)
        torch.cuda.set_per_process_memory_fraction(1.0)

    variants = {
        "evalkit_float32": dict(dtype="float32", runs=1),
        "evalkit_bfloat16_auto": {},
        **{f"evalkit_bfloat16_b{size}": dict(batch_size=size, runs=1) for size in (8, 16, 32, 64)},
        "evalkit_bfloat16_eager_attention": dict(attn_implementation="eager", batch_size=32, runs=1),
        "evalkit_bfloat16_auto_oom_halving": dict(memory_fraction=0.08, runs=1),
        "evalkit_bfloat16_compile_b32": dict(compile=True, batch_size=32),
        "evalkit_bfloat16_compile_auto": dict(compile=True),
        "evalkit_bfloat16_compile_b64": dict(compile=True, batch_size=64),
        "evalkit_bfloat16_compile_cudagraphs_b64": dict(compile="reduce-overhead", batch_size=64),  # whole forward
        "evalkit_bfloat16_compile_autotune_b64": dict(compile="max-autotune-no-cudagraphs", batch_size=64),
    }
    for name in args.variants.split(","):
        evalkit_variant(name, **variants[name])
        write_json(Path(args.out), {"partial": True, "variants": rows, **others})  # a time-out leaves the figures

    reference = (rows.get("docs_loop_float32") or rows["evalkit_float32_run1"])["nll_sum"]
    for row in rows.values():
        row["nll_relative_to_float32"] = abs(row["nll_sum"] - reference) / abs(reference)
    best = min((r for n, r in rows.items() if n.startswith("evalkit_bfloat16")), key=lambda r: r["seconds"])
    report = {
        "benchmark": "perplexity-gpu", "shape": "gpt2-large", "tokens": len(tokens), "tokens_scored": scored,
        "windows": len(windows), "stride": args.stride, "max_length": args.max_length,
        "matmul_bf16_tflops_measured": peak, "flops": flops, "floor_seconds": flops / peak / 1e12,
        "shape_matmul_floor_seconds": shape_floor, "variants": rows, "best_evalkit_seconds": best["seconds"],
        "speedup_vs_docs_float32": rows.get("docs_loop_float32", {}).get("seconds", float("nan")) / best["seconds"],
        "speedup_vs_docs_bfloat16": rows["docs_loop_bfloat16"]["seconds"] / best["seconds"],
        **others, "hardware": hardware(), "versions": library_versions(),
    }
    write_json(Path(args.out), report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("variants", "hardware", "versions", *others)},
                     indent=1))


if __name__ == "__main__":
    main()
