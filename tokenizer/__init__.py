"""armkit's tokenizer: frozen encoder -> projections -> FSQ -> quantized embeddings. Never imports lightning."""

from tokenizer.buildable import Buildable, ConfigError, build, to_spec
from tokenizer.model import Tokenizer, TokenizerOutput
from tokenizer.quantizer import FSQQuantizer

__all__ = ["Buildable", "ConfigError", "FSQQuantizer", "Tokenizer", "TokenizerOutput", "build", "to_spec"]
