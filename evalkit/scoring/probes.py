"""Every question evalkit asks of a Hugging Face model's interface, in one place: where its inputs go, whether its
forward keeps only some logits, what it calls its key/value cache, whether a device map spread it, whether its
logits split into body and output layer; and the logits at scored positions that those answers allow."""

from __future__ import annotations

import functools
import inspect
import weakref

import torch

from evalkit.loading.compile_policy import eager_for

OUTPUT_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (body, output layer) or None


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: its first parameter's device (the first device under a device map)."""
    return next(model.parameters()).device


@functools.cache
def keeps_logits(model_class: type) -> bool:
    """Whether the model's forward takes `logits_to_keep` (asked once per class, not once per batch)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


@functools.cache
def cache_argument(model_class: type) -> str:
    """The forward's name for a key/value cache: `cache` in newer transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def is_spread(model) -> bool:
    """Whether a device map spread the model over more than one device."""
    placement = getattr(model, "hf_device_map", None)
    return bool(placement) and len(set(placement.values())) > 1


def output_split(model) -> tuple | None:
    """(body, output layer) when the model's logits are exactly its output layer applied to its body's last hidden
    states, checked once per model on a probe (a model that scales or caps its logits is not split), else None."""
    if model not in OUTPUT_SPLITS:
        body = getattr(model, "base_model", model)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        split = None
        if body is not model and head is not None:
            probe = torch.arange(8, device=model_device(model))[None] % model.config.vocab_size
            with eager_for(model):  # a probe's shape is never worth a compile
                whole = model(input_ids=probe, use_cache=False).logits.float()
                parts = head(body(input_ids=probe, use_cache=False).last_hidden_state).float()
            split = (body, head) if whole.shape == parts.shape and torch.allclose(whole, parts, 1e-4, 1e-4) else None
        OUTPUT_SPLITS[model] = split
    return OUTPUT_SPLITS[model]


def scored_logits(model, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at `positions` only: the output layer never runs on context positions when the model supports it.
    A model spread over several devices runs as body, then output layer at the positions, indexed on the body's
    last device: accelerate moves every tensor argument of the whole model's forward (`logits_to_keep` too) to its
    first device, where it cannot index states on the last ("indices should be either on cpu or on the same
    device"). Those logits stay on the output layer's device."""
    spread = is_spread(model)
    if spread and (split := output_split(model)) is not None:
        body, head = split
        hidden = body(input_ids=input_ids, use_cache=False).last_hidden_state
        return head(hidden[:, positions.to(hidden.device)])
    if keeps_logits(type(model)) and not spread:
        return model(input_ids=input_ids, logits_to_keep=positions, use_cache=False).logits
    logits = model(input_ids=input_ids, use_cache=False).logits
    return logits[:, positions.to(logits.device)]


@functools.cache
def takes_positions(model_class: type) -> bool:
    """Whether the model's forward takes `position_ids` (`generate` passes them only then)."""
    return "position_ids" in inspect.signature(model_class.forward).parameters
