"""Zero-shot classification scores of the methods that need no causal LM (method=loglikelihood is the causal LM's
own request type, scoring.causal_lm):

- nli: the HF zero-shot-classification pipeline's semantics (premise = text, hypothesis = template with the label;
  softmax of entailment logits over labels, or entailment vs contradiction per label with multi_label), with every
  (text, label) pair batched across examples and sorted by length;
- embedding: cosine similarity between mean-pooled sentence embeddings of the text and of each label description.
"""

from __future__ import annotations

import numpy as np
import torch

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
