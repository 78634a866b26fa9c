"""The shared model-loading layer: sources (hub, local, GGUF, packaged, CTranslate2, random init), option checks,
fingerprints, the pool that keeps a sweep's model loaded, and kernel swaps. It knows nothing about tasks: a caller
names the head it needs ("causal-lm", "speech-seq2seq", "ctc", "sequence-classification", "encoder")."""

from evalkit.loading.fingerprints import model_fingerprint
from evalkit.loading.loaded import LoadedModel
from evalkit.loading.loader import ensure_causal, load_fresh
from evalkit.loading.options import LoadOptions
from evalkit.loading.pool import MODELS, load_model
from evalkit.loading.sources import check_head, context_length, has_head, model_config, resolve_location

__all__ = ["MODELS", "LoadOptions", "LoadedModel", "check_head", "context_length", "ensure_causal", "has_head",
           "load_fresh", "load_model", "model_config", "model_fingerprint", "resolve_location"]
