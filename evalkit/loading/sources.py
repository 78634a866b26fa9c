"""A model's transformers config, read without any weights, and what it allows: the heads transformers can build
for it, and its facts (facts.py) as the settings checks need them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import transformers

from evalkit.errors import EvalkitError
from evalkit.loading.facts import CTRANSLATE2_FACTS, ModelFacts, check_trained_head
from evalkit.loading.locations import Location, dequantized, is_ctranslate2, is_random_init, resolve_location

# head name -> (model auto class, preprocessor auto class)
HEADS = {
    "causal-lm": ("AutoModelForCausalLM", "AutoTokenizer"),
    "speech-seq2seq": ("AutoModelForSpeechSeq2Seq", "AutoProcessor"),
    "ctc": ("AutoModelForCTC", "AutoProcessor"),
    "sequence-classification": ("AutoModelForSequenceClassification", "AutoTokenizer"),
    "encoder": ("AutoModel", "AutoTokenizer"),
}
def load_config(location: Location, trust_remote_code: bool) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(
            location.path, trust_remote_code=trust_remote_code, **location.from_pretrained_kwargs()
        )
    except OSError as error:
        first_line = str(error).strip().splitlines()[0]
        hint = "offline, point at a local copy with model.name_or_path=DIR" if location.source == "hub" else \
            "is it a model folder?"
        raise EvalkitError(f"could not load model '{location.path}' ({first_line}); {hint}") from None
    except Exception as error:  # a corrupt config.json or GGUF header raises many kinds
        if "custom code" in str(error) and not trust_remote_code:
            raise EvalkitError(f"model '{location.path}' comes with its own code; trust_remote_code=true runs it "
                               "(read that code first)") from None
        text = str(error).strip().splitlines()
        raise EvalkitError(f"could not read the config of model '{location.path}' ({type(error).__name__}: "
                           f"{text[0] if text else 'no message'}); the file may be truncated or corrupt") from None


def model_config(spec: Mapping, trust_remote_code: bool = False) -> Any:
    """The transformers config of a model spec (random init: built from the spec's `architecture` and `config`;
    a CTranslate2 checkpoint has none: None)."""
    if is_ctranslate2(spec):
        return None
    if is_random_init(spec):
        return transformers.AutoConfig.for_model(spec["architecture"], **dict(spec.get("config") or {}))
    location = resolve_location(spec)
    return load_config(dequantized(location) or location, trust_remote_code)


def model_class(head: str) -> type:
    return getattr(transformers, HEADS[head][0])


def has_head(config: Any, head: str) -> bool:
    """Whether transformers has a `head` model for this config (a CTranslate2 Whisper is a speech-seq2seq model)."""
    if config is None:
        return head == "speech-seq2seq"
    if getattr(config, "auto_map", None) and HEADS[head][0] in config.auto_map:
        return True  # remote code declares its own classes
    return type(config) in model_class(head)._model_mapping


def check_head(spec: Mapping, config: Any, head: str) -> None:
    if not has_head(config, head):
        model_type = getattr(config, "model_type", "ctranslate2 whisper")
        raise EvalkitError(
            f"model '{spec.get('name')}' (model_type={model_type}) has no {head} head; this evaluation needs a "
            f"{head} model"
        )
    check_trained_head(spec, model_facts(config), head)


def is_decoder_only(config: Any) -> bool:
    """A causal LM with no masked-LM form (GPT-2, LLaMA, ...); BERT-style encoders have both heads."""
    return (has_head(config, "causal-lm") and not config.is_encoder_decoder
            and type(config) not in transformers.AutoModelForMaskedLM._model_mapping)


def model_facts(config: Any) -> ModelFacts:
    """The facts of a transformers config (None: a CTranslate2 Whisper checkpoint)."""
    return CTRANSLATE2_FACTS if config is None else ModelFacts.of(config, decoder_only=is_decoder_only(config))
