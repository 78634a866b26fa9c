"""Perplexity of a causal LM over one token stream, by strided sliding windows (units: windows).

Every token after the first is scored exactly once (windows.py); the NLL is summed in float64 over the scored tokens
of the whole corpus, never averaged over windows. With reference_model, the same windows also give KL(reference ||
model), top-1 agreement and the perplexity change (quantization cost).

Windows are scored by the causal LM's loglikelihood_rolling (scoring.causal_lm, scoring.rolling), imported by the
methods that score, with torch: the command line reads this module (settings, checks) before torch is imported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evalkit import loading
from evalkit.config.presets import model_spec
from evalkit.config.settings import setting
from evalkit.data import load_text
from evalkit.errors import EvalkitError
from evalkit.evaluators.base import (
    NUMBER,
    Data,
    Evaluator,
    Metric,
    ModelCheck,
    ModelRequest,
    Outcome,
    PreparedJob,
    Units,
    numbers,
)
from evalkit.evaluators.perplexity.documents import check_documents, detokenizer, load_documents
from evalkit.evaluators.perplexity.windows import Window, check_window_args, document_windows
from evalkit.hashing import canonical_json, sha256_text
from evalkit.metrics import count_bytes, count_words, divergence_metrics, perplexity_interval, perplexity_metrics

if TYPE_CHECKING:
    import torch

    from evalkit.scoring.causal_lm import CausalLM
    from evalkit.scoring.rolling import WindowInputs

BOS_MODES = ("auto", "stream", "window")
DEFAULT_WINDOW = 1024  # cap on the default window: cost grows with it, and GPT-2-era figures use 1024


@dataclass(frozen=True)
class Settings:
    stride: int = setting(512, "a window starts every `stride` tokens (1 <= stride <= max_length)", minimum=1,
                          plotted=True)
    max_length: int | None = setting(None, "tokens per window, the last only a label (at most the model's context "
                                     "length + 1); null: the model's context length, capped at 1024",
                                     minimum=2)
    bos: str = setting("auto", "auto: as the tokenizer does | stream: one BOS at the start | window: a BOS before "
                       "every window (every token scored)", choices=BOS_MODES)
    reference_model: str | None = setting(None, "a preset or path: also report KL(reference || model), top-1 "
                                          "agreement and delta perplexity against it", compared=False)
    last_window: str = setting("short", "short: the final window starts on the stride grid (the HF docs schedule) | "
                               "full: it reaches back to a full max_length of context (lm-evaluation-harness's "
                               "rolling windows; with max_length=L+1 stride=L bos=stream, its figures)",
                               choices=("short", "full"))


def window_length(settings: Settings, context: int | None) -> int:
    return settings.max_length or min(context or DEFAULT_WINDOW, DEFAULT_WINDOW)


def document_names(texts: list[str]) -> list[str]:
    """How an error names each document of a per-document task: its number and how it begins."""
    return [f"document {number} of {len(texts)} ({' '.join(text[:200].split())[:40]!r})"
            for number, text in enumerate(texts, 1)]


def same_tokenizer(first, second) -> bool:
    return first.get_vocab() == second.get_vocab() and first.all_special_tokens == second.all_special_tokens


def token_streams(tokenizer, data: Data, task: Mapping, bos: str, limit: int | None) -> tuple:
    """(token ids to score, the texts they cover, each document's token count): one stream (cut by `limit`), or the
    documents of a per-document task laid end to end, each tokenized on its own (with its own BOS under
    bos=stream)."""
    import torch

    if isinstance(data.content, str):
        tokens, text = tokenize_stream(tokenizer, data.content, bos, limit)
        return tokens, [text], [len(tokens)]
    clean = detokenizer(task)
    encoded = [tokenize_stream(tokenizer, clean(document), bos, None)[0] for document in data.content]
    return torch.cat(encoded), list(data.content), [len(ids) for ids in encoded]


def tokenize_stream(tokenizer, text: str, bos: str, limit: int | None) -> tuple[torch.Tensor, str]:
    """Token ids of the stream and the text they cover (the whole text, or the prefix kept by `limit`)."""
    import torch

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


class Perplexity(Evaluator):
    name = "perplexity"
    Settings = Settings
    throughput = "tokens"
    progress_unit = "tok"
    unit_name = "window"
    metrics = (
        Metric("perplexity", "exp(summed NLL / scored tokens) over the whole stream", False, "", headline=True,
               interval="perplexity_ci95"),
        Metric("nll_per_token", "mean negative log-likelihood per scored token", False, "nats"),
        Metric("bits_per_byte", "summed NLL in bits / UTF-8 bytes of the text", False, "bits"),
        Metric("byte_perplexity", "exp(summed NLL / bytes)", False),
        Metric("word_perplexity", "exp(summed NLL / whitespace-separated words)", False),
        Metric("nll_sum", "negative log-likelihood summed in float64 over every scored token", None, "nats"),
        Metric("tokens_scored", "tokens scored (every token after the first)", None, "tokens", count=True),
        Metric("windows", "windows evaluated", None, count=True, units=True),
        Metric("documents", "per-document tasks: documents scored, each with its own windows", None, count=True),
        Metric("bytes", "UTF-8 bytes of the evaluated text", None, "bytes"),
        Metric("words", "whitespace-separated words of the evaluated text", None, "words"),
        Metric("max_length", "tokens per window (resolved)", None, "tokens"),
        Metric("stride", "tokens between window starts", None, "tokens"),
        Metric("kl_mean", "KL(reference || model) per scored token", False, "nats", interval="kl_mean_ci95"),
        Metric("kl_median", "median of the per-token KL(reference || model)", False, "nats"),
        Metric("kl_p99", "99th percentile of the per-token KL", False, "nats"),
        Metric("kl_max", "largest per-token KL", False, "nats"),
        Metric("top1_agreement", "share of tokens where both models' most likely next token agree", True),
        Metric("delta_ppl", "perplexity minus the reference's", False),
        Metric("ppl_ratio", "perplexity / the reference's", False),
        Metric("reference_perplexity", "the reference model's perplexity on the same windows", False),
        Metric("reference_nll_sum", "the reference model's summed NLL", None, "nats"),
    )

    def validate(self, settings: Settings, run, task: Mapping, model: ModelCheck | None = None) -> Settings:
        check_documents(task)
        if settings.max_length is not None:
            check_window_args(settings.max_length, settings.stride)
        if model is not None:
            context = model.facts.context_length
            max_length = window_length(settings, context)
            if context and max_length > context + 1:  # a window's last token is only a label, not an input
                raise EvalkitError(f"max_length={max_length} exceeds the model's context length ({context}) and "
                                   f"the window's final label token; allowed: max_length <= {context + 1}")
            check_window_args(max_length, settings.stride)
        return settings

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        requests = {"model": ModelRequest(model, "causal-lm")}
        if settings.reference_model:
            requests["reference"] = ModelRequest(model_spec(settings.reference_model), "causal-lm", unquantized=True)
        return requests

    def limit_counts(self, task: Mapping) -> str:
        return "documents" if task.get("documents") else "tokens"

    def limit_read(self, metrics: Mapping, task: Mapping) -> int | None:
        if task.get("documents"):
            return super().limit_read(metrics, task)
        return metrics["tokens_scored"] + 1  # the first token is read, not scored

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        if task.get("documents"):  # limit: the first N documents
            documents, origin = load_documents(task, run.data_dir, run.limit)
            return Data(documents, sha256_text(canonical_json(documents)), origin)
        source = load_text(task, run.data_dir)
        return Data(source.text, sha256_text(source.text), source.origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> PerplexityJob:
        from evalkit.scoring.causal_lm import CausalLM
        from evalkit.scoring.rolling import WindowInputs

        loaded, reference = models["model"], models.get("reference")
        tokenizer = loaded.tokenizer
        lm = CausalLM(loaded)
        if reference:
            if not same_tokenizer(tokenizer, reference.tokenizer):
                raise EvalkitError(f"reference_model={settings.reference_model} has another tokenizer than the "
                                   "model; KL and agreement need both models to score the same tokens")
            loading.ensure_causal(reference.model, settings.reference_model)
        if settings.bos != "auto" and tokenizer.bos_token_id is None:
            raise EvalkitError(f"bos={settings.bos} needs a BOS token, but the tokenizer has none; use bos=auto")
        max_length = window_length(settings, loaded.context_length)
        tokens, texts, lengths = token_streams(tokenizer, data, task, settings.bos, run.limit)
        names = document_names(texts) if isinstance(data.content, list) else None
        windows, owners = document_windows(lengths, max_length, settings.stride, settings.bos == "window",
                                           settings.last_window == "full", names)
        bos_id = tokenizer.bos_token_id if settings.bos == "window" else None
        merge = isinstance(data.content, list) and reference is None  # documents' final windows batched together
        inputs = WindowInputs(tokens, windows, bos_id, loaded.device, merge_contexts=merge)
        units = Units(len(windows), [w.num_targets for w in windows], [inputs.shape(i) for i in range(len(windows))])
        return PerplexityJob(units, lm, reference and reference.model, inputs, windows, texts,
                             owners if isinstance(data.content, list) else None, len(tokens), data.origin,
                             max_length=max_length, stride=settings.stride)


@dataclass
class PerplexityJob(PreparedJob):
    """Windows of the token stream (units), scored by the causal LM's loglikelihood_rolling."""

    units: Units
    lm: CausalLM
    reference: torch.nn.Module | None
    inputs: WindowInputs
    windows: list[Window]
    texts: list[str]  # what was scored, as read: the stream (cut by limit), or each document before detokenizing
    owners: list[int] | None  # per-document tasks: each window's document
    tokens: int
    origin: str
    clock: dict = field(default_factory=lambda: defaultdict(float))
    max_length: int = 0
    stride: int = 0

    def auto_batch_size(self, device: torch.device) -> int:
        from evalkit.scoring import rolling

        return rolling.CPU_AUTO_BATCH if device.type == "cpu" else rolling.CUDA_AUTO_BATCH

    def warm_up(self, todo: list[int]) -> None:
        """On an accelerator, the first window scored once, untimed: a process's first forward compiles the fused
        kernels (Triton), sets up cuBLAS and cuDNN and plans the attention: seconds, against a fraction of one once
        warm (benchmarks/results/gpu_h200_llama3-8b_first_pass_batches.json)."""
        if todo and self.lm.device.type != "cpu":
            self.lm.loglikelihood_rolling(*self.inputs(todo[:1]), reference=self.reference)

    def score(self, batch: list[int]) -> list[dict]:
        clock = self.clock if self.reference is not None else None
        figures = self.lm.loglikelihood_rolling(*self.inputs(batch), reference=self.reference, clock=clock)
        token_kl = figures.pop("token_kl", None)
        columns = {name: values.tolist() for name, values in figures.items()}
        records = [{name: column[row] for name, column in columns.items()} for row in range(len(batch))]
        if token_kl is not None:
            for record, row in zip(records, token_kl.tolist()):
                record["token_kl"] = row
        self.clock["tokens"] += sum(self.windows[i].num_targets for i in batch)
        return records

    def record_type(self, index: int) -> dict:
        if self.reference is None:
            return {"nll": NUMBER}
        return {**dict.fromkeys(("nll", "reference_nll", "kl_sum", "kl_max", "top1_agree"), NUMBER),
                "token_kl": numbers(self.windows[index].num_targets)}

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        import torch

        windows = self.windows
        column = {name: torch.tensor([r[name] for r in records], dtype=torch.float64)
                  for name in records[0] if name != "token_kl"}
        nll_sum = float(column["nll"].sum())
        total = sum(w.num_targets for w in windows)
        metrics = perplexity_metrics(nll_sum, total, sum(map(count_bytes, self.texts)),
                                     sum(map(count_words, self.texts)))
        metrics["perplexity_ci95"] = perplexity_interval(column["nll"].numpy(), [w.num_targets for w in windows])
        metrics.update(windows=len(windows), max_length=self.max_length, stride=self.stride)
        samples = [{"window": i, "begin": w.begin, "end": w.end, "tokens_scored": w.num_targets,
                    "nll": float(column["nll"][i])} for i, w in enumerate(windows)]
        if self.owners is not None:
            metrics["documents"] = len(self.texts)
            for sample, owner in zip(samples, self.owners):
                sample["document"] = owner
        timing = {}
        if self.reference is not None:
            metrics.update(divergence_metrics(
                token_kl=torch.cat([torch.tensor(r["token_kl"], dtype=torch.float32) for r in records]).numpy(),
                window_kl=column["kl_sum"].numpy(), window_tokens=[w.num_targets for w in windows],
                top1_agree=float(column["top1_agree"].sum()), reference_nll=float(column["reference_nll"].sum()),
                nll=nll_sum))
            for i, sample in enumerate(samples):
                sample.update(reference_nll=float(column["reference_nll"][i]),
                              kl_mean=float(column["kl_sum"][i]) / windows[i].num_targets,
                              kl_max=float(column["kl_max"][i]), top1_agree=int(column["top1_agree"][i]))
            scored = self.clock["tokens"] or 1
            timing = {f"{key}_per_token": self.clock[key] / scored for key in ("model_seconds", "reference_seconds")}
        scored_text = self.texts[0] if self.owners is None else canonical_json(self.texts)
        data = {"origin": self.origin, "sha256": sha256_text(scored_text), "tokens": self.tokens,
                "characters": sum(map(len, self.texts))}
        return Outcome(metrics, samples, data, timing)


EVALUATOR = Perplexity()
