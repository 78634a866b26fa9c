"""The decode loop behind generate_until: one batch of prompts continued token by token with a key/value cache.

It feeds the model what transformers' `generate` feeds it (left-padded prompts, position ids from the attention
mask, the last position's logits, the model's own logits processors), so a greedy continuation is the one `generate`
and lm-eval's HFLM produce, and it does less around that:
- prompts that begin with the same tokens (a task's few-shot examples) run those tokens once, at batch size one,
  and share their cache: prefill costs the rows' own tokens only;
- a row stops as soon as its end-of-sequence token or one of its stop strings appears, and stopped rows leave the
  batch, their cache rows with them, once they are half of it (HF's rule is to stop when every row is done);
- on an accelerator the stop strings are looked for every few steps, not every step: each look waits for the device;
- the cache is written in place, not copied at every step (static_decoding.py), and on a GPU each step replays as a
  CUDA graph.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers

from evalkit.scoring.probes import cache_argument, keeps_logits, model_device, takes_positions

MIN_SHARED_PREFIX = 16  # fewer common tokens are not worth a separate forward pass
STOP_CHECK_INTERVAL = {"cpu": 1}  # steps between looks for stop strings; 8 elsewhere (each look syncs the device)
DEVICE_STOP_CHECK_INTERVAL = 8


@dataclass
class Rows:
    """The rows still generating: their index in the batch, attention mask, last position and finished flags."""

    index: list[int]
    mask: torch.Tensor  # (rows, tokens so far): 0 on padding
    last_position: torch.Tensor  # (rows,)
    finished: torch.Tensor  # (rows,) bool: an end-of-sequence token was generated
    sequence: torch.Tensor | None  # (rows, tokens so far) ids, kept only for logits processors that read them

    def subset(self, picked: torch.Tensor, keep: list[int]) -> Rows:
        """The rows at positions `keep` (`picked`: the same on the device)."""
        return Rows([self.index[i] for i in keep], self.mask[picked], self.last_position[picked],
                    self.finished[picked], None if self.sequence is None else self.sequence[picked])

    def advanced(self, next_ids: torch.Tensor, extend_mask: bool = True) -> Rows:
        """The rows one token on: `next_ids` appended."""
        mask = torch.cat([self.mask, self.mask.new_ones(len(self.index), 1)], dim=1) if extend_mask else self.mask
        sequence = None if self.sequence is None else torch.cat([self.sequence, next_ids[:, None]], dim=1)
        return Rows(self.index, mask, self.last_position + 1, self.finished, sequence)


def logits_processors(model, sampling_kwargs: dict, pad_id: int | None, prompt_width: int, device):
    """What `generate` does to the logits before choosing, from the model's generation config and these settings
    (a repetition penalty in the config, temperature and top-p when sampling); empty for plain greedy decoding."""
    config = copy.deepcopy(model.generation_config)
    config.update(**sampling_kwargs, pad_token_id=pad_id)
    return model._get_logits_processor(config, input_ids_seq_length=prompt_width, device=device)


def eos_ids(model, tokenizer, device) -> torch.Tensor:
    """The tokens that end a row as `generate` ends it: the generation config's, else the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = tokenizer.eos_token_id if ids is None else ids
    ids = [] if ids is None else ids if isinstance(ids, list) else [ids]
    return torch.tensor(ids, dtype=torch.long, device=device)


class Decoder:
    """One model's forward passes with a growing key/value cache."""

    def __init__(self, model):
        self.model, self.device = model, model_device(model)
        self.cache = transformers.DynamicCache(config=model.config)
        self.cache_key = cache_argument(type(model))
        self.positions = takes_positions(type(model))
        self.keeps_logits = keeps_logits(type(model))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Float32 logits at the last position of each row, the cache extended by `ids`."""
        kwargs = {"position_ids": positions} if self.positions else {}
        if self.keeps_logits:
            kwargs["logits_to_keep"] = 1
        output = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **{self.cache_key: self.cache},
                            **kwargs)
        return output.logits[:, -1, :].float()

    def prefill(self, prompt_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, Rows, torch.Tensor]:
        """The prompts through the model: (logits of each row's last token, the rows, the left-padded prompts).
        A prefix common to every row runs once and its cache is repeated for each row; the rows' own tokens
        follow it, left-padded (the padding then sits between prefix and row, masked, positions continuing)."""
        shared = len(os.path.commonprefix(prompt_ids)) if len(prompt_ids) > 1 else 0
        shared = min(shared, min(len(row) for row in prompt_ids) - 1)  # every row keeps a token of its own
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        if shared:
            ones = torch.ones(1, shared, dtype=torch.long, device=self.device)
            prefix = torch.tensor([prompt_ids[0][:shared]], device=self.device)
            self.forward(prefix, ones, torch.arange(shared, device=self.device)[None])
            self.cache.batch_repeat_interleave(len(prompt_ids))
        own = [row[shared:] for row in prompt_ids]
        width = max(len(row) for row in own)
        ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in own], device=self.device)
        own_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in own], device=self.device)
        mask = torch.cat([torch.ones(len(own), shared, dtype=torch.long, device=self.device), own_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        logits = self.forward(ids, mask, positions[:, shared:])
        rows = Rows(list(range(len(own))), mask, positions[:, -1], torch.zeros(len(own), dtype=torch.bool,
                                                                                device=self.device), None)
        return logits, rows, ids

    def step(self, next_ids: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, Rows]:
        """The logits after each row's next token, and the rows one token on."""
        rows = rows.advanced(next_ids)
        return self.forward(next_ids[:, None], rows.mask, rows.last_position[:, None]), rows

    def select(self, keep: list[int], rows: Rows) -> Rows:
        """Only the rows at positions `keep` go on, their cache rows with them."""
        picked = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(picked)
        return rows.subset(picked, keep)


def make_decoder(model, max_new: int) -> Decoder:
    """A static-cache decoder (static_decoding.py; CUDA graphs on a GPU) for models that take one, else this one."""
    from evalkit.scoring.static_decoding import StaticDecoder, fits

    decoder = Decoder(model)
    if not fits(model, decoder.cache):
        return decoder
    return StaticDecoder(model, max_new, graphs=decoder.device.type == "cuda")


def decode(model, tokenizer, prompt_ids: list[list[int]], max_new: int, sampling_kwargs: dict,
           generator: torch.Generator | None, is_stopped: Callable[[list[int]], bool],
           decoder: Decoder | None = None) -> list[list[int]]:
    """Each prompt's generated token ids (its end-of-sequence token included when one ended it), by `decoder`
    (make_decoder's choice when None)."""
    decoder = decoder or make_decoder(model, max_new)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = pad_id or 0
    logits, rows, prompts = decoder.prefill(prompt_ids, pad_id)
    processors = logits_processors(model, sampling_kwargs, pad_id, prompts.shape[1], decoder.device)
    if processors:
        rows.sequence = prompts
    ends = eos_ids(model, tokenizer, decoder.device)
    interval = STOP_CHECK_INTERVAL.get(decoder.device.type, DEVICE_STOP_CHECK_INTERVAL)
    generated: list[list[int]] = [[] for _ in prompt_ids]
    done: set[int] = set()
    pending: list[torch.Tensor] = []
    for step in range(max_new):
        if processors:
            logits = processors(rows.sequence, logits)
        next_ids = choose(logits, sampling_kwargs.get("do_sample", False), generator).masked_fill(rows.finished,
                                                                                                   pad_id)
        rows.finished |= torch.isin(next_ids, ends)
        pending.append(next_ids)
        if step == max_new - 1 or (step + 1) % interval == 0:
            running = collect(pending, rows, generated, done, ends.tolist(), is_stopped)
            pending = []
            if not running or step == max_new - 1:
                break
            if len(running) <= len(rows.index) // 2:
                next_ids = next_ids[torch.tensor(running, device=decoder.device)]
                rows = decoder.select(running, rows)
        logits, rows = decoder.step(next_ids, rows)
    return generated


def choose(logits: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row, as `generate` chooses it from processed logits."""
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def collect(pending: list[torch.Tensor], rows: Rows, generated: list[list[int]], done: set[int], ends: list[int],
            is_stopped: Callable[[list[int]], bool]) -> list[int]:
    """The tokens of the steps since the last look appended to each row not `done` (up to and including an
    end-of-sequence token); the positions in `rows` of the rows still running. A row that ends here joins `done`
    and is marked finished (it generates padding until it leaves the batch)."""
    steps = torch.stack(pending, dim=1).tolist()  # one wait for the device per look
    running = []
    for position, (row, new) in enumerate(zip(rows.index, steps)):
        if row in done:
            continue
        tokens = generated[row]
        for token in new:
            tokens.append(token)
            if token in ends:
                break
        if tokens[-1] in ends or is_stopped(tokens):
            done.add(row)
            rows.finished[position] = True
        else:
            running.append(position)
    return running
