"""evalkit: language-model evaluation you can trust."""

from evalkit.errors import EvalkitError

__version__ = "0.1.0"
__all__ = ["EvalkitError", "__version__"]
