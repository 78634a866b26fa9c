"""Plain, independent references that tests and benchmarks hold evalkit's evaluators against.

Deliberately naive: they follow the Hugging Face documentation's recipes line by line and share no code with the
evaluators they check.
"""

from __future__ import annotations

import torch

from evalkit.evaluators.perplexity.windows import Window


@torch.inference_mode()
def docs_loop_nll(model, tokens: torch.Tensor, windows: list[Window], bos_token_id: int | None = None) -> list[float]:
    """The HF perplexity docs loop over the given windows: one window per forward, context labels set to -100, the
    model's mean loss times the number of scored tokens, summed in float64. Returns each window's NLL sum."""
    device = next(model.parameters()).device
    sums = []
    for window in windows:
        input_ids = tokens[window.begin : window.end].unsqueeze(0).to(device)
        labels = input_ids.clone()
        labels[:, : window.target_begin - window.begin] = -100
        if bos_token_id is not None:
            input_ids = torch.cat([torch.tensor([[bos_token_id]], device=device), input_ids], dim=1)
            labels = torch.cat([torch.tensor([[-100]], device=device), labels], dim=1)
        outputs = model(input_ids, labels=labels)
        scored = int((labels[:, 1:] != -100).sum())  # the model shifts labels left by one inside
        sums.append(outputs.loss.double().item() * scored)
    return sums


@torch.inference_mode()
def docs_loop_perplexity(model, input_ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """The HF perplexity docs loop (its own window arithmetic), over a 1-D tensor of token ids.
    Returns (NLL sum in float64, number of scored tokens). Valid for stride < max_length."""
    device = next(model.parameters()).device
    input_ids = input_ids.unsqueeze(0)
    seq_len = input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        window = input_ids[:, begin_loc:end_loc].to(device)
        target_ids = window.clone()
        target_ids[:, :-trg_len] = -100
        outputs = model(window, labels=target_ids)
        # The docs subtract batch_size from the valid-label count "due to the internal label shift", which is right
        # only for the first window: later windows' first label is already -100. Count what the loss really averaged.
        num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
        nll_sum += outputs.loss.double().item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens


def pipeline_nli_scores(model, tokenizer, texts, labels, hypothesis_template, multi_label, batch_size=1):
    """transformers' zero-shot-classification pipeline, scores rearranged to [texts, labels] in label order."""
    import transformers

    classifier = transformers.pipeline("zero-shot-classification", model=model, tokenizer=tokenizer,
                                       device=next(model.parameters()).device)
    outputs = classifier(list(texts), candidate_labels=list(labels), hypothesis_template=hypothesis_template,
                         multi_label=multi_label, batch_size=batch_size)
    return [[dict(zip(o["labels"], o["scores"]))[label] for label in labels] for o in outputs]
