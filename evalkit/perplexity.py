"""Perplexity of a causal LM over one token stream, by strided sliding windows.

Every token after the first is scored exactly once (see windows.py); NLL is summed in float64 over the scored tokens
of the whole corpus. Speed comes from batching windows of equal shape (no padding, so batching never changes a
number), computing the output layer only at scored positions, and keeping results on the device until the end.
"""

from __future__ import annotations

import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalkit import distributed
from evalkit.data import load_text
from evalkit.errors import EvalkitError
from evalkit.loading import LoadOptions, load_model
from evalkit.metrics import count_bytes, count_words, perplexity_metrics
from evalkit.results import EvalResult, sha256_text
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


@torch.inference_mode()
def score_windows(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    windows: list[Window],
    batch_size: int | str = "auto",
    bos_token_id: int | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed NLL (float64, on CPU) of each window's scored tokens, and the batch size that ran last.

    With `bos_token_id`, each window's input is prefixed by that token. With batch_size="auto", a batch that runs out
    of memory is halved and retried; windows already scored are kept.
    """
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    nll = torch.zeros(len(windows), dtype=torch.float64, device=device)
    keeps_logits = "logits_to_keep" in inspect.signature(type(model).forward).parameters
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
                if keeps_logits:
                    logits = model(input_ids=input_ids, logits_to_keep=positions, use_cache=False).logits
                else:
                    logits = model(input_ids=input_ids, use_cache=False).logits[:, positions]
                targets = input_ids[:, positions + 1]
                losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if batch_size != "auto" or size == 1 or not is_out_of_memory(error):
                    raise
                del error
                size //= 2
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            nll[destinations[chunk]] = losses.view(len(input_ids), -1).double().sum(1)
            if on_batch:
                on_batch(indices[chunk])
            done += len(input_ids)
    return nll.cpu(), size


@torch.inference_mode()
def check_causal(model: torch.nn.Module, name: str) -> None:
    """Reject models whose outputs at a position depend on later tokens (e.g. a BERT given a causal-LM head)."""
    vocab = model.get_input_embeddings().num_embeddings
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(0, vocab, (2, 4), generator=generator)
    probe[1, :3] = probe[0, :3]  # same prefix, different last token
    logits = model(input_ids=probe.to(device), use_cache=False).logits.float()
    if not torch.allclose(logits[0, :3], logits[1, :3], rtol=1e-3, atol=1e-3):
        raise EvalkitError(f"model '{name}' is not causal (its outputs depend on later tokens); perplexity needs a causal LM")


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
    batch_size = cfg.batch_size
    if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
        raise EvalkitError(f"batch_size={batch_size} is not allowed; allowed: a positive integer or auto")
    if cfg.limit is not None and not (isinstance(cfg.limit, int) and cfg.limit >= 1):
        raise EvalkitError(f"limit={cfg.limit} is not allowed; allowed: a positive number of tokens, or null")
    if not isinstance(cfg.stride, int):
        raise EvalkitError(f"stride={cfg.stride} is not allowed; allowed: an integer 1 <= stride <= max_length")
    if cfg.max_length is not None:
        check_window_args(cfg.max_length, cfg.stride)


def evaluate(cfg: Mapping) -> EvalResult:
    """Perplexity of cfg.model on cfg.task's text stream."""
    check_options(cfg)
    source = load_text(cfg.task, cfg.data_dir)
    loaded = load_model(cfg.model, LoadOptions.from_config(cfg), head="causal-lm")
    model, tokenizer = loaded.model, loaded.tokenizer
    check_causal(model, cfg.model.name)
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
    mine = [windows[i] for i in my_indices]
    bar = tqdm(total=sum(w.num_targets for w in mine), unit="tok", desc="perplexity", disable=not distributed.is_main())
    with bar:
        started = time.perf_counter()
        nll_mine, batch_size = score_windows(
            model,
            tokens,
            mine,
            cfg.batch_size,
            bos_token_id=tokenizer.bos_token_id if cfg.bos == "window" else None,
            on_batch=lambda done: bar.update(sum(mine[i].num_targets for i in done)),
        )
        nll = torch.zeros(len(windows), dtype=torch.float64, device=loaded.device)
        nll[my_indices] = nll_mine.to(loaded.device)
        nll = distributed.sum_across_ranks(nll).cpu()
        seconds = time.perf_counter() - started

    metrics = perplexity_metrics(float(nll.sum()), total_targets, count_bytes(text), count_words(text))
    metrics.update(windows=len(windows), max_length=max_length, stride=cfg.stride)
    samples = [
        {"window": i, "begin": w.begin, "end": w.end, "tokens_scored": w.num_targets, "nll": float(nll[i])}
        for i, w in enumerate(windows)
    ]
    return EvalResult(
        metrics=metrics,
        samples=samples,
        model=loaded.provenance,
        data={"origin": source.origin, "sha256": sha256_text(text), "tokens": len(tokens), "bytes": len(text)},
        timing={
            "eval_seconds": seconds,
            "tokens_per_second": total_targets / seconds,
            "batch_size": batch_size,
            "processes": distributed.world_size(),
        },
    )
