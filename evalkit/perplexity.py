"""Perplexity of a causal LM over one token stream, by strided sliding windows.

Every token after the first is scored exactly once (see windows.py); NLL is summed in float64 over the scored tokens
of the whole corpus. Speed comes from batching windows of equal shape (no padding, so batching never changes a
number), computing the output layer only at scored positions, and keeping results on the device until the end.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalkit import distributed
from evalkit.batching import resolve_batch_size
from evalkit.data import load_text
from evalkit.errors import EvalkitError
from evalkit.loading import LoadOptions, ensure_causal, load_model
from evalkit.metrics import count_bytes, count_words, divergence_metrics, perplexity_metrics
from evalkit.presets import model_spec
from evalkit.results import EvalResult, sha256_text
from evalkit.runs import Job
from evalkit.windows import Window, check_window_args, window_schedule

BOS_MODES = ("auto", "stream", "window")
DEFAULT_MAX_LENGTH = 1024  # cap on the default window: cost grows with it, and GPT-2-era figures use 1024
CPU_AUTO_BATCH = 1  # on 2 CPU cores larger batches measured slower (cache); OOM there kills rather than raises
CUDA_AUTO_BATCH = 128  # first try on accelerators, halved on out-of-memory until a batch fits


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error)


def initial_batch_size(batch_size: int | str, device: torch.device, num_windows: int) -> int:
    if batch_size != "auto":
        return int(batch_size)
    return min(CPU_AUTO_BATCH if device.type == "cpu" else CUDA_AUTO_BATCH, num_windows)


@functools.cache
def keeps_logits(model_class: type) -> bool:
    """Whether the model's forward takes `logits_to_keep` (asked once per class, not once per batch)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def scored_logits(model, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at `positions` only: the output layer never runs on context positions when the model supports it."""
    if keeps_logits(type(model)):
        return model(input_ids=input_ids, logits_to_keep=positions, use_cache=False).logits
    return model(input_ids=input_ids, use_cache=False).logits[:, positions]


def timed(clock: dict | None, key: str, device: torch.device, work: Callable):
    """work(), adding its duration to clock[key] when a clock is given (synchronising the device around it)."""
    if clock is None:
        return work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    clock[key] += time.perf_counter() - started
    return result


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each target's negative log-likelihood in float32: the logits' logsumexp minus the target's logit (written for
    torch.compile, which makes it one pass over the logits)."""
    return logits.float().logsumexp(-1) - logits.gather(-1, targets).squeeze(-1).float()


@functools.cache
def compiled_token_nll() -> Callable:
    """token_nll compiled: one pass over the (bfloat16) logits with an online logsumexp; on an H200, 3.6 ms for
    65,536 x 50,264 logits against 22.6 ms for a float32 log-softmax and a gather (the output layer's matmul itself:
    12.7 ms). Made on first use: torch.compile imports the compiler (seconds)."""
    return torch.compile(token_nll, options={"coordinate_descent_tuning": True})


def score_batch(model, input_ids, positions, reference=None, clock=None, compile_nll=False) -> dict[str, torch.Tensor]:
    """Per-window figures for one batch: summed NLL; with a reference model also its NLL, the summed and largest
    per-token KL(reference || model), top-1 agreements, and each token's KL ("token_kl", [batch, targets])."""
    targets = input_ids[:, positions + 1, None]
    if reference is None and compile_nll:
        return {"nll": compiled_token_nll()(scored_logits(model, input_ids, positions), targets).double().sum(1)}
    # float32 log-softmax straight from the (bfloat16) logits: one kernel, no float32 copy of the logits first (in
    # eager mode faster than token_nll: 22.6 against 32.7 ms for 65,536 x 50,264 logits on an H200)
    log_probs = timed(clock, "model_seconds", input_ids.device,
                      lambda: scored_logits(model, input_ids, positions).log_softmax(-1, dtype=torch.float32))
    figures = {"nll": -log_probs.gather(-1, targets).squeeze(-1).double().sum(1)}
    if reference is None:
        return figures
    ref_device = next(reference.parameters()).device
    ref_log_probs = timed(clock, "reference_seconds", ref_device, lambda: scored_logits(
        reference, input_ids.to(ref_device), positions.to(ref_device)).log_softmax(-1, dtype=torch.float32))
    ref_log_probs = ref_log_probs.to(log_probs.device)
    token_kl = F.kl_div(log_probs, ref_log_probs, log_target=True, reduction="none").sum(-1)
    figures.update(
        reference_nll=-ref_log_probs.gather(-1, targets).squeeze(-1).double().sum(1),
        kl_sum=token_kl.double().sum(1),
        kl_max=token_kl.amax(1).double(),
        top1_agree=(log_probs.argmax(-1) == ref_log_probs.argmax(-1)).sum(1).double(),
        token_kl=token_kl,
    )
    return figures


@torch.inference_mode()
def score_windows(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    windows: list[Window],
    batch_size: int | str = "auto",
    bos_token_id: int | None = None,
    on_batch: Callable[[list[int], dict], None] | None = None,
    reference: torch.nn.Module | None = None,
    clock: dict | None = None,
    compile_nll: bool = False,
) -> tuple[dict, int]:
    """Per-window figures (see score_batch; float64 on CPU, "token_kl" a list of per-window tensors) and the batch
    size that ran last. A reference model runs in lockstep on the same batches; nothing is kept but the figures.

    With `bos_token_id`, each window's input is prefixed by that token. With batch_size="auto", a batch that runs out
    of memory is halved and retried; windows already scored are kept. `on_batch(indices, figures)` hears of each
    finished batch (its windows' indices and score_batch's figures, on the device). A `clock` dict accumulates each
    model's forward time ("model_seconds", "reference_seconds"). `compile_nll` torch.compiles the NLL reduction (set
    with compile=...).
    """
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    figures: dict = defaultdict(lambda: torch.zeros(len(windows), dtype=torch.float64, device=device))
    token_kl: list = [None] * len(windows)
    size = initial_batch_size(batch_size, device, len(windows))
    prefix = 0 if bos_token_id is None else 1
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, window in enumerate(windows):
        groups[(window.length, window.target_begin - window.begin)].append(index)

    for (length, offset), indices in groups.items():
        # input position p predicts input p + 1; the scored targets are inputs [prefix + offset, prefix + length)
        positions = torch.arange(prefix + offset - 1, prefix + length - 1, device=device)
        steps = torch.arange(length, device=device)
        begins = torch.tensor([windows[i].begin for i in indices], device=device)
        destinations = torch.tensor(indices, device=device)  # made once: no host-to-device copy per batch
        done = 0
        while done < len(indices):
            chunk = slice(done, done + size)
            input_ids = tokens[begins[chunk, None] + steps]
            if prefix:
                input_ids = torch.cat([input_ids.new_full((len(input_ids), 1), bos_token_id), input_ids], dim=1)
            try:
                batch = score_batch(model, input_ids, positions, reference, clock, compile_nll)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if batch_size != "auto" or size == 1 or not is_out_of_memory(error):
                    raise
                del error
                size //= 2
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            if on_batch:
                on_batch(indices[chunk], batch)
            if "token_kl" in batch:
                for index, row in zip(indices[chunk], batch.pop("token_kl").cpu()):
                    token_kl[index] = row
            for name, values in batch.items():
                figures[name][destinations[chunk]] = values
            done += len(input_ids)
    scores = {name: values.cpu() for name, values in figures.items()}
    if reference is not None:
        scores["token_kl"] = token_kl
    return scores, size


def tokenize_stream(tokenizer, text: str, bos: str, limit: int | None) -> tuple[torch.Tensor, str]:
    """Token ids of the stream and the text they cover (the whole text, or the prefix kept by `limit`)."""
    encoding = tokenizer(
        text, add_special_tokens=bos == "auto", return_offsets_mapping=tokenizer.is_fast, verbose=False
    )
    ids = list(encoding["input_ids"])
    offsets = list(encoding.get("offset_mapping") or [])
    if bos == "stream" and ids[:1] != [tokenizer.bos_token_id]:
        ids.insert(0, tokenizer.bos_token_id)
        offsets.insert(0, (0, 0))
    if limit is not None and limit < len(ids):
        ids = ids[:limit]
        if offsets:
            text = text[: max(end for _, end in offsets[:limit])]
        else:
            text = tokenizer.decode(ids, skip_special_tokens=True)
    return torch.tensor(ids, dtype=torch.long), text


def check_options(cfg: Mapping) -> None:
    """Reject bad evaluation settings before any data or weights are read."""
    if cfg.bos not in BOS_MODES:
        raise EvalkitError(f"bos={cfg.bos} is not allowed; allowed: {', '.join(BOS_MODES)}")
    resolve_batch_size(cfg.batch_size, CPU_AUTO_BATCH)  # validates; the size itself is chosen per device later
    if cfg.limit is not None and not (isinstance(cfg.limit, int) and cfg.limit >= 1):
        raise EvalkitError(f"limit={cfg.limit} is not allowed; allowed: a positive number of tokens, or null")
    if not isinstance(cfg.stride, int):
        raise EvalkitError(f"stride={cfg.stride} is not allowed; allowed: an integer 1 <= stride <= max_length")
    if cfg.max_length is not None:
        check_window_args(cfg.max_length, cfg.stride)


def same_tokenizer(first, second) -> bool:
    return first.get_vocab() == second.get_vocab() and first.all_special_tokens == second.all_special_tokens


def merge_scores(windows, my_indices, todo, computed: dict, done: dict, device) -> dict:
    """Per-window figures of every window: this rank's, computed now (`todo`) or read back from an interrupted run's
    records (`done`), then combined across ranks."""
    names = [name for name in (computed or next(iter(done.values()), {})) if name not in ("index", "token_kl")]
    scores = {}
    for name in names:
        merged = torch.zeros(len(windows), dtype=torch.float64)
        if todo:
            merged[todo] = computed[name]
        for i in my_indices:
            if i in done:
                merged[i] = done[i][name]
        scores[name] = distributed.sum_across_ranks(merged.to(device)).cpu()
    if "token_kl" in computed or any("token_kl" in record for record in done.values()):
        token_kl = [None] * len(windows)
        for i, row in zip(todo, computed.get("token_kl", [])):
            token_kl[i] = row
        for i in my_indices:
            if i in done:
                token_kl[i] = torch.tensor(done[i]["token_kl"])
        scores["token_kl"] = distributed.merge_across_ranks(token_kl)
    return scores


def evaluate(cfg: Mapping, job: Job | None = None) -> EvalResult:
    """Perplexity of cfg.model on cfg.task's text stream; with cfg.reference_model, also its divergence from that
    reference on the same windows. Windows finished by an interrupted run of the same job are not recomputed."""
    check_options(cfg)
    source = load_text(cfg.task, cfg.data_dir)
    reference_spec = model_spec(cfg.reference_model) if cfg.get("reference_model") else None
    models = [cfg.model, *([reference_spec] if reference_spec else [])]
    progress = (job or Job(cfg)).start(sha256_text(source.text), models)
    options = LoadOptions.from_config(cfg)
    loaded = load_model(cfg.model, options, head="causal-lm")
    model, tokenizer = loaded.model, loaded.tokenizer
    ensure_causal(model, cfg.model.name)
    reference = None
    if reference_spec:
        reference = load_model(reference_spec, replace(options, quantization="none"), "causal-lm")
        if not same_tokenizer(tokenizer, reference.tokenizer):
            raise EvalkitError(
                f"reference_model={cfg.reference_model} has another tokenizer than the model; KL and agreement "
                "need both models to score the same tokens"
            )
        ensure_causal(reference.model, cfg.reference_model)
    context = loaded.provenance["context_length"]
    max_length = cfg.max_length or min(context or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)
    if context and max_length > context:
        raise EvalkitError(f"max_length={max_length} exceeds the model's context length ({context})")
    check_window_args(max_length, cfg.stride)
    if cfg.bos != "auto" and tokenizer.bos_token_id is None:
        raise EvalkitError(f"bos={cfg.bos} needs a BOS token, but the tokenizer has none; use bos=auto")

    tokens, text = tokenize_stream(tokenizer, source.text, cfg.bos, cfg.limit)
    windows = window_schedule(len(tokens), max_length, cfg.stride, bos_per_window=cfg.bos == "window")
    total_targets = sum(w.num_targets for w in windows)
    distributed.init(loaded.device)
    my_indices = distributed.shard(len(windows))  # this rank's share; all windows in a single process
    todo = [i for i in my_indices if i not in progress.done]
    mine = [windows[i] for i in todo]
    clock = defaultdict(float) if reference else None

    def on_batch(batch: list[int], figures: dict) -> None:
        bar.update(sum(mine[i].num_targets for i in batch))
        if progress.keeping:  # one host copy per batch, only when there is a log to keep
            values = {name: tensor.tolist() for name, tensor in figures.items()}
            progress.save([{"index": todo[i], **{name: column[row] for name, column in values.items()}}
                           for row, i in enumerate(batch)])

    bar = tqdm(total=sum(w.num_targets for w in mine), unit="tok", desc="perplexity", disable=not distributed.is_main())
    with bar:
        started = time.perf_counter()
        computed, batch_size = score_windows(
            model,
            tokens,
            mine,
            cfg.batch_size,
            bos_token_id=tokenizer.bos_token_id if cfg.bos == "window" else None,
            on_batch=on_batch,
            reference=reference.model if reference else None,
            clock=clock,
            compile_nll=bool(cfg.get("compile")),
        )
        scores = merge_scores(windows, my_indices, todo, computed, progress.done, loaded.device)
        seconds = time.perf_counter() - started

    nll = scores["nll"]
    metrics = perplexity_metrics(float(nll.sum()), total_targets, count_bytes(text), count_words(text))
    metrics.update(windows=len(windows), max_length=max_length, stride=cfg.stride)
    samples = [
        {"window": i, "begin": w.begin, "end": w.end, "tokens_scored": w.num_targets, "nll": float(nll[i])}
        for i, w in enumerate(windows)
    ]
    computed_targets = total_targets - sum(windows[i].num_targets for i in progress.done)
    timing = {"eval_seconds": seconds, "tokens_per_second": computed_targets / seconds, "batch_size": batch_size,
              "processes": distributed.world_size(), "units_computed": len(windows) - len(progress.done)}
    if reference:
        metrics.update(divergence_metrics(
            token_kl=torch.cat(scores["token_kl"]).numpy(),
            window_kl=scores["kl_sum"].numpy(),
            window_tokens=[w.num_targets for w in windows],
            top1_agree=float(scores["top1_agree"].sum()),
            reference_nll=float(scores["reference_nll"].sum()),
            nll=float(nll.sum()),
        ))
        for sample, i in zip(samples, range(len(windows))):
            sample.update(reference_nll=float(scores["reference_nll"][i]), kl_mean=float(scores["kl_sum"][i]) /
                          windows[i].num_targets, kl_max=float(scores["kl_max"][i]),
                          top1_agree=int(scores["top1_agree"][i]))
        timing.update({f"{key}_per_token": value / computed_targets for key, value in clock.items()})
    return EvalResult(
        metrics=metrics,
        samples=samples,
        model=loaded.provenance if not reference else {**loaded.provenance, "reference": reference.provenance},
        data={"origin": source.origin, "sha256": sha256_text(text), "tokens": len(tokens), "bytes": len(text)},
        timing=timing,
    )
