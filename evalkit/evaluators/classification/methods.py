"""Zero-shot classification scores, three methods (the classification evaluator's `method=`):

- nli: the HF zero-shot-classification pipeline's semantics (premise = text, hypothesis = template with the label;
  softmax of entailment logits over labels, or entailment vs contradiction per label with multi_label), with every
  (text, label) pair batched across examples and sorted by length;
- loglikelihood: a causal LM scores each label's continuation after a prompt; each context is encoded once for all
  of its single-token labels, with optional contextual calibration (Zhao et al. 2021);
- embedding: cosine similarity between mean-pooled sentence embeddings of the text and of each label description.
"""

from __future__ import annotations

import numpy as np
import torch

from evalkit.errors import EvalkitError
from evalkit.evaluators.classification.labels import nli_label_ids, softmax
from evalkit.job.batching import batches, variable_shape_attention
from evalkit.scoring.probes import model_device


@torch.inference_mode()
@variable_shape_attention()
def nli_scores(model, tokenizer, texts, hypotheses, multi_label, batch_size) -> np.ndarray:
    """[examples, labels] scores with the zero-shot-classification pipeline's postprocessing."""
    entailment, contradiction = nli_label_ids(model.config.label2id)
    device = model_device(model)
    premises = [text for text in texts for _ in hypotheses]
    encoded = tokenizer(premises, list(hypotheses) * len(texts), truncation="only_first")
    features = [{key: encoded[key][k] for key in encoded} for k in range(len(premises))]
    logits = np.zeros((len(premises), model.config.num_labels), dtype=np.float32)
    order = sorted(range(len(premises)), key=lambda k: len(features[k]["input_ids"]))  # little padding per batch
    for rows in batches(order, batch_size):
        inputs = tokenizer.pad([features[k] for k in rows], return_tensors="pt").to(device)
        logits[rows] = model(**inputs).logits.float().cpu().numpy()
    logits = logits.reshape(len(texts), len(hypotheses), -1)
    if multi_label or len(hypotheses) == 1:
        return softmax(logits[..., [contradiction, entailment]])[..., 1]
    return softmax(logits[..., entailment])


@torch.inference_mode()
@variable_shape_attention()
def loglikelihood_scores(model, tokenizer, contexts, continuations, batch_size) -> np.ndarray:
    """[contexts, continuations] summed log-probabilities of each continuation after each context.

    One row per context scores all single-token continuations at its last position; each longer continuation gets a
    row of its own (context + continuation minus its last token). Rows are left-padded, with position ids counted from
    the first real token, so the scored positions are the last ones of every row and the output layer runs only there.
    """
    device = model_device(model)
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
    return scores


@torch.inference_mode()
@variable_shape_attention()
def embed(model, tokenizer, texts, batch_size) -> torch.Tensor:
    """Mean-pooled (over the attention mask) last hidden states, one row per text, float32 on CPU."""
    device = model_device(model)
    max_length = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    out = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt").to(device)
        hidden = model(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).cpu())
    return torch.cat(out)


def embedding_scores(model, tokenizer, texts, descriptions, batch_size) -> np.ndarray:
    """[texts, labels] cosine similarities between text and label-description embeddings."""
    label_vectors = torch.nn.functional.normalize(embed(model, tokenizer, list(descriptions), batch_size), dim=-1)
    text_vectors = torch.nn.functional.normalize(embed(model, tokenizer, list(texts), batch_size), dim=-1)
    return (text_vectors @ label_vectors.T).double().numpy()
