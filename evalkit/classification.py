"""Zero-shot classification: one evaluator, three scoring methods (method=):

- nli: the HF zero-shot-classification pipeline's semantics (premise = text, hypothesis = template with the label;
  softmax of entailment logits over labels, or entailment vs contradiction per label with multi_label), with every
  (text, label) pair batched across examples and sorted by length;
- loglikelihood: a causal LM scores each label's continuation after a prompt; each context is encoded once for all
  of its single-token labels, with optional contextual calibration (Zhao et al. 2021);
- embedding: cosine similarity between mean-pooled sentence embeddings of the text and of each label description.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from evalkit.batching import batches, resolve_batch_size, variable_shape_attention
from evalkit.data import load_examples
from evalkit.errors import EvalkitError
from evalkit.loading import LoadOptions, ensure_causal, load_model
from evalkit.metrics import classification_metrics, count_bytes
from evalkit.results import EvalResult, sha256_text
from evalkit.runs import Job, Progress

METHODS = {"nli": "sequence-classification", "loglikelihood": "causal-lm", "embedding": "encoder"}
CPU_AUTO_BATCH, CUDA_AUTO_BATCH = 16, 128
CHUNK = 1024  # examples scored (and sorted by length) together, then saved: an interruption loses at most one chunk


def check_labels(labels: list) -> None:
    if not labels:
        raise EvalkitError("task.labels is empty; give the candidate labels, e.g. task.labels=[negative,positive]")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise EvalkitError(f"task.labels has duplicates: {', '.join(map(str, duplicates))}; each label once")


def check_template(template: str, key: str) -> None:
    if "{}" not in str(template):
        raise EvalkitError(f"{key}={template!r} has no '{{}}' where the text or label goes")


def nli_label_ids(config) -> tuple[int, int]:
    """(entailment id, contradiction id) from the model's label2id, matched by name as the pipeline does."""
    label2id = {str(k).lower(): v for k, v in (getattr(config, "label2id", None) or {}).items()}
    entailment = next((v for k, v in label2id.items() if k.startswith("entail")), None)
    contradiction = next((v for k, v in label2id.items() if k.startswith("contra")), None)
    if entailment is None or contradiction is None:
        raise EvalkitError(
            f"the NLI model's config.label2id ({dict(config.label2id or {})}) has no entailment or contradiction "
            "label; method=nli needs an NLI (MNLI-style) model"
        )
    return entailment, contradiction


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@torch.inference_mode()
@variable_shape_attention()
def nli_scores(model, tokenizer, texts, hypotheses, multi_label, batch_size, on_batch=None) -> np.ndarray:
    """[examples, labels] scores with the zero-shot-classification pipeline's postprocessing."""
    entailment, contradiction = nli_label_ids(model.config)
    device = next(model.parameters()).device
    premises = [text for text in texts for _ in hypotheses]
    encoded = tokenizer(premises, list(hypotheses) * len(texts), truncation="only_first")
    features = [{key: encoded[key][k] for key in encoded} for k in range(len(premises))]
    logits = np.zeros((len(premises), model.config.num_labels), dtype=np.float32)
    order = sorted(range(len(premises)), key=lambda k: len(features[k]["input_ids"]))  # little padding per batch
    for rows in batches(order, batch_size):
        inputs = tokenizer.pad([features[k] for k in rows], return_tensors="pt").to(device)
        logits[rows] = model(**inputs).logits.float().cpu().numpy()
        if on_batch:
            on_batch(len(rows) / len(hypotheses))
    logits = logits.reshape(len(texts), len(hypotheses), -1)
    if multi_label or len(hypotheses) == 1:
        return softmax(logits[..., [contradiction, entailment]])[..., 1]
    return softmax(logits[..., entailment])


@torch.inference_mode()
@variable_shape_attention()
def loglikelihood_scores(model, tokenizer, contexts, continuations, batch_size, on_batch=None) -> np.ndarray:
    """[contexts, continuations] summed log-probabilities of each continuation after each context.

    One row per context scores all single-token continuations at its last position; each longer continuation gets a
    row of its own (context + continuation minus its last token). Rows are left-padded, with position ids counted from
    the first real token, so the scored positions are the last ones of every row and the output layer runs only there.
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if any(not t for t in targets):
        raise EvalkitError("a label continuation encodes to no tokens; check the loglikelihood continuation template")
    single = [j for j, t in enumerate(targets) if len(t) == 1]
    rows = []  # (example, continuation indices, input ids, number of scored positions)
    for i, ids in enumerate(tokenizer(list(contexts))["input_ids"]):
        if single:
            rows.append((i, single, ids, 1))
        rows.extend((i, [j], ids + targets[j][:-1], len(targets[j])) for j in range(len(targets)) if len(targets[j]) > 1)
    scores = np.zeros((len(contexts), len(continuations)))
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][2]))
    for chunk in batches(order, batch_size):
        width = max(len(rows[r][2]) for r in chunk)
        input_ids = torch.full((len(chunk), width), pad_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, r in enumerate(chunk):
            ids = rows[r][2]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        keep = max(rows[r][3] for r in chunk)
        log_probs = model(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=(mask.cumsum(1) - 1).clamp(min=0).to(device),
            logits_to_keep=keep,
            use_cache=False,
        ).logits.float().log_softmax(-1).cpu()
        for row, r in enumerate(chunk):
            i, labels, _, scored = rows[r]
            positions = log_probs[row, keep - scored:]
            for j in labels:
                scores[i, j] = float(positions[torch.arange(scored), torch.tensor(targets[j][-scored:])].double().sum()) \
                    if scored > 1 else float(positions[0, targets[j][0]])
        if on_batch:
            on_batch(sum(len(rows[r][1]) for r in chunk) / len(continuations))
    return scores


@torch.inference_mode()
@variable_shape_attention()
def embed(model, tokenizer, texts, batch_size, on_batch=None) -> torch.Tensor:
    """Mean-pooled (over the attention mask) last hidden states, one row per text, float32 on CPU."""
    device = next(model.parameters()).device
    max_length = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    out = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt").to(device)
        hidden = model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu())
        if on_batch:
            on_batch(len(inputs["input_ids"]))
    return torch.cat(out)


def embedding_scores(model, tokenizer, texts, descriptions, batch_size, on_batch=None) -> np.ndarray:
    """[texts, labels] cosine similarities between text and label-description embeddings."""
    label_vectors = torch.nn.functional.normalize(embed(model, tokenizer, list(descriptions), batch_size), dim=-1)
    text_vectors = torch.nn.functional.normalize(embed(model, tokenizer, list(texts), batch_size, on_batch), dim=-1)
    return (text_vectors @ label_vectors.T).double().numpy()


def scores_by_chunk(score, texts: list[str], num_labels: int, todo: list[int], progress: Progress, batch_size: int,
                    on_batch) -> np.ndarray:
    """[texts, labels] scores: `score` over the texts not yet done, CHUNK at a time (sorted by length within a
    chunk), each chunk's rows saved to the progress log; the rest read back from an interrupted run's records."""
    scores = np.zeros((len(texts), num_labels))
    for i, record in progress.done.items():
        scores[i] = record["scores"]
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        scores[chunk] = score([texts[i] for i in chunk], batch_size=batch_size, on_batch=on_batch)
        progress.save([{"index": i, "scores": scores[i].tolist()} for i in chunk])
    return scores


def evaluate(cfg: Mapping, job: Job | None = None) -> EvalResult:
    """Zero-shot accuracy of cfg.model on cfg.task by cfg.method (or the task's default method)."""
    task = cfg.task
    method = cfg.get("method") or task.get("method")
    if method not in METHODS:
        raise EvalkitError(f"method={method} is not allowed; allowed: {', '.join(METHODS)}")
    labels = [str(label) for label in task.labels]
    check_labels(labels)
    settings = task.get(method) or {}
    templates = {"nli": ["hypothesis_template"], "loglikelihood": ["prompt", "continuation"],
                 "embedding": ["description"]}[method]
    for key in templates:
        check_template(settings.get(key, ""), f"task.{method}.{key}")
    if cfg.limit is not None and not (isinstance(cfg.limit, int) and cfg.limit >= 1):
        raise EvalkitError(f"limit={cfg.limit} is not allowed; allowed: a positive number of examples, or null")
    examples = load_examples(task, cfg.data_dir, cfg.limit)
    data_sha256 = sha256_text("\n".join(f"{label}\t{text}" for label, text in zip(examples.labels, examples.texts)))
    progress = (job or Job(cfg)).start(data_sha256)
    loaded = load_model(cfg.model, LoadOptions.from_config(cfg), head=METHODS[method])
    model, tokenizer = loaded.model, loaded.tokenizer
    batch_size = resolve_batch_size(cfg.batch_size, CPU_AUTO_BATCH if loaded.device.type == "cpu" else CUDA_AUTO_BATCH)
    if method == "nli":
        nli_label_ids(model.config)
    if method == "loglikelihood":
        ensure_causal(model, cfg.model.name)

    inputs = examples.texts
    if method == "nli":
        hypotheses = [settings.hypothesis_template.format(label) for label in labels]
        score = functools.partial(nli_scores, model, tokenizer, hypotheses=hypotheses, multi_label=cfg.multi_label)
    elif method == "embedding":
        descriptions = [settings.description.format(label) for label in labels]
        score = functools.partial(embedding_scores, model, tokenizer, descriptions=descriptions)
    else:
        continuations = [settings.continuation.format(label) for label in labels]
        score = functools.partial(loglikelihood_scores, model, tokenizer, continuations=continuations)
        inputs = [settings.prompt.format(text) for text in examples.texts]  # contexts
    extra_predictions: dict[str, np.ndarray] = {}
    todo = [i for i in range(len(inputs)) if i not in progress.done]
    with tqdm(total=len(todo), unit="ex", desc=method, dynamic_ncols=True) as bar:
        started = time.perf_counter()
        scores = scores_by_chunk(score, inputs, len(labels), todo, progress, batch_size, bar.update)
        if method == "loglikelihood":
            lengths = np.array([count_bytes(c) for c in continuations], dtype=float)
            extra_predictions["norm"] = (scores / lengths).argmax(1)
            if cfg.calibrate:
                free = [settings.prompt.format(text) for text in settings.get("content_free") or ["N/A"]]
                content_free = score(free, batch_size=batch_size)
                # label probabilities given a content-free input, normalised over the labels and averaged
                prior = np.log(softmax(content_free).mean(0))
                extra_predictions["uncalibrated"] = scores.argmax(1)
                scores = np.log(softmax(scores)) - prior
        seconds = time.perf_counter() - started

    predictions = scores.argmax(1)
    truth = np.array(examples.labels)
    metrics = classification_metrics(truth, predictions, labels)
    for name, predicted in extra_predictions.items():
        metrics[f"accuracy_{name}"] = float((predicted == truth).mean())
    metrics.update(method=method, examples=len(truth), calibrated=bool(method == "loglikelihood" and cfg.calibrate))
    samples = [
        {"index": i, "text": text, "label": labels[truth[i]], "prediction": labels[predictions[i]],
         "correct": bool(truth[i] == predictions[i]), "scores": dict(zip(labels, map(float, scores[i])))}
        for i, text in enumerate(examples.texts)
    ]
    return EvalResult(
        metrics=metrics,
        samples=samples,
        model=loaded.provenance,
        data={"origin": examples.origin, "examples": len(truth), "sha256": data_sha256},
        timing={"eval_seconds": seconds, "examples_per_second": len(todo) / seconds, "batch_size": batch_size,
                "units_computed": len(todo)},
    )
