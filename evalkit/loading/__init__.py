"""The shared model-loading layer: sources (hub, local, GGUF, packaged, CTranslate2, random init), option checks,
fingerprints, the pool that keeps a sweep's model loaded, and kernel swaps. It knows nothing about tasks: a caller
names the head it needs ("causal-lm", "speech-seq2seq", "ctc", "sequence-classification", "encoder").

Names are imported on first use (PEP 562): the command line checks options, locations and config files before torch
and transformers are imported, which takes seconds."""

import importlib

WHERE = {
    "model_fingerprint": "fingerprints", "LoadedModel": "loaded", "ensure_causal": "loader", "load_fresh": "loader",
    "LoadOptions": "options", "MODELS": "pool", "load_model": "pool", "check_head": "sources",
    "model_config": "sources", "model_facts": "sources", "context_length": "facts", "file_facts": "facts",
    "ModelFacts": "facts", "check_trained_head": "facts", "resolve_location": "locations",
}
__all__ = sorted(WHERE)


def __getattr__(name: str):
    if name not in WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{WHERE[name]}"), name)
