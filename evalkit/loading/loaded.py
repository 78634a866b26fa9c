"""What the loading layer hands back: the model, its tokenizer or processor, where inputs go, and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any  # a tokenizer, or a processor for speech models
    device: torch.device  # where inputs go (the first device under a device map)
    head: str  # causal-lm, speech-seq2seq, ...
    context_length: int | None = None  # the longest input the model's positions allow, when its config says
    provenance: dict = field(default_factory=dict)  # written into results.json as "model"


def weight_devices(model: torch.nn.Module) -> list[str]:
    """Where the weights live: accelerate's device map when there is one (weights it offloads to the CPU or disk sit
    on the 'meta' device until their layer runs), else the parameters' devices."""
    placement = getattr(model, "hf_device_map", None)
    if placement:
        return sorted({f"cuda:{place}" if isinstance(place, int) else str(place) for place in placement.values()})
    return sorted({str(p.device) for p in model.parameters()})
