"""Decode steps on a static key/value cache, replayed as one CUDA graph on a GPU.

A growing cache (transformers' DynamicCache) concatenates every layer's keys and values at every step: each step
copies the whole cache, which costs more than the step's own work on a CPU once prompts are long. A static cache is
written in place, one slot a step. On a GPU an eager decode step is bound by launching its hundreds of small kernels
from Python, not by the GPU (a step of a large model reads its weights and cache in about a millisecond): there
each step's inputs are copied into fixed tensors and a captured CUDA graph replays.

After the prompts' prefill (decoding.Decoder: the shared prefix, the rows' own tokens) their cache moves into
transformers' StaticCache, sized for the longest continuation, and the attention mask becomes a fixed
(rows, 1, 1, slots) tensor (masked slots add exact zeros to attention: the same tokens as the growing cache). The
first step runs eagerly (the warm-up a capture needs); a batch that sheds its finished rows copies the cache for the
rows left and captures again. Used for models whose every layer is a plain full-attention layer under SDPA, on one
device; anything else decodes on the growing cache.
"""

from __future__ import annotations

import logging

import torch
import transformers

from evalkit.scoring.decoding import Decoder, Rows
from evalkit.scoring.probes import is_spread

LOG = logging.getLogger(__name__)


def fits(model, cache) -> bool:
    """Whether the model's layers all take a plain static cache and a 4-D boolean mask."""
    return (model.config._attn_implementation == "sdpa" and not is_spread(model)
            and all(type(layer) is transformers.cache_utils.DynamicLayer for layer in cache.layers))


class StaticDecoder(Decoder):
    """Decoder whose steps write a static cache, replayed as a CUDA graph when `graphs`."""

    def __init__(self, model, max_new: int, graphs: bool = True):
        super().__init__(model)
        self.max_new, self.graphs = max_new, graphs
        self.graph, self.warmed = None, False
        self.slots = self.written = 0
        self.mask = self.inputs = self.logits = None

    def prefill(self, prompt_ids: list[list[int]], pad_id: int):
        logits, rows, ids = super().prefill(prompt_ids, pad_id)
        self.written = rows.mask.shape[1]
        self.slots = self.written + self.max_new
        self.cache = self.static_copy(self.cache, torch.arange(len(prompt_ids), device=self.device))
        self.mask = torch.zeros(len(prompt_ids), 1, 1, self.slots, dtype=torch.bool, device=self.device)
        self.mask[:, 0, 0, :self.written] = rows.mask.bool()
        return logits, rows, ids

    def static_copy(self, cache, keep: torch.Tensor) -> transformers.StaticCache:
        """The `keep` rows of the written slots of a cache, in a new static cache."""
        static = transformers.StaticCache(config=self.model.config, max_cache_len=self.slots)
        for index, layer in enumerate(cache.layers):
            static.update(layer.keys[keep, :, :self.written], layer.values[keep, :, :self.written], index)
        return static

    def select(self, keep: list[int], rows: Rows) -> Rows:
        picked = torch.tensor(keep, device=self.device)
        self.cache, self.mask, self.graph = self.static_copy(self.cache, picked), self.mask[picked], None
        return rows.subset(picked, keep)

    def step(self, next_ids: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, Rows]:
        self.mask[:, 0, 0, self.written] = True
        self.written += 1
        rows = rows.advanced(next_ids, extend_mask=False)
        ids, positions = next_ids[:, None], rows.last_position[:, None]
        if not self.graphs:
            return self.forward(ids, self.mask, positions), rows
        if not self.warmed:  # the first step runs eagerly: the warm-up (workspaces, kernels) a capture needs
            self.warmed = True
            return self.forward(ids, self.mask, positions), rows
        if self.graph is None and not self.capture(ids, positions):
            return self.forward(ids, self.mask, positions), rows
        self.inputs[0].copy_(ids)
        self.inputs[1].copy_(positions)
        self.graph.replay()
        return self.logits, rows

    def capture(self, ids: torch.Tensor, positions: torch.Tensor) -> bool:
        """Whether the step was captured; a model whose step cannot be (it asks the host for a value, say) decodes
        eagerly from then on, with one warning."""
        self.inputs = (ids.clone(), positions.clone())
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.logits = self.forward(self.inputs[0], self.mask, self.inputs[1])
        except RuntimeError as error:
            LOG.warning("decoding without CUDA graphs: this model's decode step could not be captured (%s)",
                        str(error).splitlines()[0])
            self.graphs = False
            return False
        self.graph = graph
        return True
