"""What a model's config says that settings are checked against: its context length, labels, saved heads, whether it
is an encoder-decoder. Read two ways: from config.json as plain JSON, before torch and transformers are imported
(the command line's checks: a wrong pairing fails in about a second), and from the transformers config that every
run reads (sources.model_facts), which also knows what the file alone cannot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit import files
from evalkit.errors import EvalkitError
from evalkit.loading.locations import dequantized, is_ctranslate2, is_random_init, resolve_location

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
CAUSAL_LM_CLASSES = ("ForCausalLM", "LMHeadModel")  # how transformers names decoder-only LM classes
CLASSIFIER_CLASSES = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering",
                      "ForMultipleChoice")
LM_HEAD_MARKS = ("LM", "ForConditionalGeneration")  # in the name of every transformers class with an LM head


def read(config: Any, key: str):
    """A config value from config.json's mapping or a transformers config object."""
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def context_length(config: Any) -> int | None:
    """The longest input the model's positions allow, or None when its config does not say."""
    for key in CONTEXT_KEYS:
        value = read(config, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class ModelFacts:
    model_type: str
    context_length: int | None = None
    label2id: Mapping = field(default_factory=dict)
    architectures: tuple[str, ...] = ()  # the classes the checkpoint was saved as
    is_encoder_decoder: bool = False
    decoder_only: bool | None = None  # a causal LM with no masked-LM form; None: the file alone cannot tell

    @classmethod
    def of(cls, config: Any, decoder_only: bool | None = None) -> ModelFacts:
        label2id = read(config, "label2id")
        if label2id is None:  # config.json may hold only id2label, from which transformers derives label2id
            label2id = {label: int(index) for index, label in (read(config, "id2label") or {}).items()}
        architectures = tuple(read(config, "architectures") or ())
        encoder_decoder = bool(read(config, "is_encoder_decoder"))
        if decoder_only is None and architectures and not encoder_decoder \
                and all(name.endswith(CAUSAL_LM_CLASSES) for name in architectures):
            decoder_only = True
        return cls(str(read(config, "model_type")), context_length(config), dict(label2id), architectures,
                   encoder_decoder, decoder_only)

    @property
    def classifier_only(self) -> bool:
        """Saved only as a classifier (e.g. an NLI model): any language-model head would be untrained weights."""
        return bool(self.architectures) and all(name.endswith(CLASSIFIER_CLASSES) for name in self.architectures)

    @property
    def without_lm_head(self) -> bool:
        """Saved without any language-model head (a classifier, a bare encoder such as BertModel)."""
        return bool(self.architectures) and not any(mark in name for name in self.architectures
                                                    for mark in LM_HEAD_MARKS)


CTRANSLATE2_FACTS = ModelFacts("whisper (CTranslate2)", is_encoder_decoder=True)


def file_facts(spec: Mapping) -> ModelFacts | None:
    """The facts of a model spec from its config file alone, or None where no config file is at hand without a
    download or a transformers import (a hub model not in the local cache, a GGUF file not dequantized yet)."""
    if is_ctranslate2(spec):
        return CTRANSLATE2_FACTS
    if is_random_init(spec):
        return ModelFacts.of({"model_type": spec["architecture"], **dict(spec.get("config") or {})})
    location = resolve_location(spec)
    if location.gguf_file:
        location = dequantized(location)
        if location is None:
            return None
    if location.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location.path, "config.json", revision=location.revision)
        path = Path(found) if isinstance(found, str) else None
    else:
        path = Path(location.path) / "config.json"
    if path is None or not path.exists():
        return None
    data = files.read_bytes(path, files.RECORD_LIMIT, "model config")  # a FIFO or device is one line, never a hang
    try:
        return ModelFacts.of(files.parse_json(data.decode("utf-8"), str(path)))
    except ValueError:  # not JSON: the full check reports it when transformers reads the config
        return None


def check_trained_head(spec: Mapping, facts: ModelFacts, head: str) -> None:
    if head == "causal-lm" and facts.without_lm_head:
        raise EvalkitError(f"model '{spec.get('name')}' was saved as {', '.join(facts.architectures)}, without a "
                           "language-model head (its causal-lm head would be untrained weights); this evaluation "
                           "needs a causal LM")
