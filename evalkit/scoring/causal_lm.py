"""A causal LM answering request types, shaped like lm-evaluation-harness's `LM` (loglikelihood,
loglikelihood_rolling, generate_until): string requests in, its numbers out. Every evaluator that scores a causal
LM goes through here; the speed lives in the layers below (pairs.py: shared-context key/value caches; rolling.py:
windows of one shape, the output layer only at scored positions)."""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.errors import EvalkitError
from evalkit.job.batching import resolve_batch_size, score_in_batches
from evalkit.loading.loaded import LoadedModel
from evalkit.loading.loader import ensure_causal
from evalkit.scoring import pairs, rolling

DEFAULT_MAX_LENGTH = 2048  # lm-eval's, for a model whose config names no context length
CPU_AUTO_QUESTIONS, CUDA_AUTO_QUESTIONS = 8, 256  # a batch holds one context length, halved on out-of-memory

TokenPairs = list[tuple[list[int], list[int]]]  # one question's (context ids, continuation ids), one per choice


@dataclass
class EncodedQuestions:
    """Questions encoded by the pair rule: their token pairs and whether each question's pairs share a context
    (pairs.shares_context), with the batching that suits them."""

    pairs: list[TokenPairs]
    shared: list[bool]

    def groups(self) -> list:
        """A batch holds questions whose shared contexts have one length (no padding there), or unshared ones."""
        return [len(question[0][0]) if is_shared else "unshared"
                for question, is_shared in zip(self.pairs, self.shared)]

    def order(self) -> list[int]:
        """Longest question first: an out-of-memory error comes with the first batch, before work is spent."""
        return sorted(range(len(self.pairs)), key=lambda i: -max(len(c) + len(t) for c, t in self.pairs[i]))


class CausalLM:
    """A loaded causal LM (rejected if its outputs look ahead or are not finite) and what it answers."""

    def __init__(self, loaded: LoadedModel):
        ensure_causal(loaded.model, loaded.provenance.get("name"))
        self.model, self.tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
        self.context_length = loaded.context_length
        self.max_length = loaded.context_length or DEFAULT_MAX_LENGTH
        self.provenance = loaded.provenance
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        self.prefix_id = bos if bos is not None else eos  # the context of a pair whose context is empty

    @property
    def compile_nll(self) -> bool:
        """Whether the NLL is compiled too: with the model (at loading, or when compile=auto chose it)."""
        return bool(self.provenance.get("compile"))

    def auto_batch_size(self) -> int:
        """Questions per batch under batch_size=auto."""
        return CPU_AUTO_QUESTIONS if self.device.type == "cpu" else CUDA_AUTO_QUESTIONS

    def encode(self, questions: list[list[tuple[str, str]]]) -> EncodedQuestions:
        """Each question's (context, continuation) strings as tokens, by lm-eval's pair rule."""
        encoded = [[self.encode_pair(context, continuation) for context, continuation in question]
                   for question in questions]
        return EncodedQuestions(encoded, [pairs.shares_context(question, self.max_length) for question in encoded])

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = pairs.encode_pair(self.tokenizer, context, continuation, self.prefix_id)
        if not continuation_ids:
            raise EvalkitError(f"the continuation {continuation!r} encodes to no tokens: nothing to score")
        return context_ids, continuation_ids

    def loglikelihood_tokens(self, encoded: EncodedQuestions, batch: list[int]) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is_greedy) of each pair of each question of one batch (question indices of one
        EncodedQuestions group): shared contexts through their key/value cache, others pair by pair."""
        return pairs.batch_scores(self.model, [encoded.pairs[i] for i in batch], self.max_length,
                                  encoded.shared[batch[0]])

    def loglikelihood(self, requests: list[tuple[str, str]],
                      batch_size: int | str = "auto") -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each (context, continuation) request, in request order, as lm-eval's
        HFLM.loglikelihood gives them: requests with one context are scored as one question."""
        members: dict[str, list[int]] = {}
        for index, (context, _) in enumerate(requests):
            members.setdefault(context, []).append(index)
        questions = list(members.values())
        encoded = self.encode([[requests[index] for index in question] for question in questions])
        results: list = [None] * len(requests)

        def keep(batch: list[int], scores: list[list[tuple[float, bool]]]) -> None:
            for question, question_scores in zip(batch, scores):
                for index, score in zip(questions[question], question_scores):
                    results[index] = score

        size = resolve_batch_size(batch_size, self.auto_batch_size())
        score_in_batches(encoded.order(), size, batch_size == "auto",
                         lambda batch: self.loglikelihood_tokens(encoded, batch), keep, encoded.groups(), self.device)
        return results

    def loglikelihood_rolling(self, input_ids, positions, mask=None, reference=None, clock=None) -> dict:
        """Per-window figures of one batch of windows (rolling.WindowInputs gives the arguments; rolling.score_batch
        says what they are), with KL against a `reference` model when one is given."""
        return rolling.score_batch(self.model, input_ids, positions, mask, reference, clock, self.compile_nll,
                                   self.context_length)

    def generate_until(self, prompts: list[str], until: list[str], max_gen_toks: int, **sampling) -> list[str]:
        """Each prompt's continuation, generated until one of `until` or `max_gen_toks` new tokens."""
        from evalkit.scoring.generation import generate_until  # imported when a job generates

        return generate_until(self.model, self.tokenizer, prompts, until, max_gen_toks, self.max_length, **sampling)

    def encode_prompt(self, prompt: str, max_gen_toks: int) -> list[int]:
        """A prompt's tokens as generate_until encodes it, leaving room for max_gen_toks new ones."""
        from evalkit.scoring.generation import encode_prompt

        return encode_prompt(self.tokenizer, prompt, self.max_length - max_gen_toks)

    def chat_prompt(self, turns: list[dict]) -> str:
        """The turns rendered by the tokenizer's chat template, ready for the assistant's reply (as lm-eval renders
        them); a tokenizer without a template is one error line."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise EvalkitError("apply_chat_template=true needs a tokenizer with a chat template, and this model's has "
                               "none; allowed with it: apply_chat_template=false")
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def generate_tokens(self, prompt_ids: list[list[int]], until: list[str], max_gen_toks: int, sampling) -> list:
        """One batch of encoded prompts continued together (scoring.generation.generate_batch): each row's text and
        how many tokens it generated."""
        from evalkit.scoring.generation import generate_batch

        return generate_batch(self.model, self.tokenizer, prompt_ids, until, max_gen_toks, sampling)
