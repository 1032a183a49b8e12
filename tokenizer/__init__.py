"""armkit's tokenizer: frozen encoder -> projections -> FSQ -> quantized embeddings. Never imports lightning."""

from armkit.common.buildable import Buildable, ConfigError, build, to_spec
from armkit.tokenizer.model import Tokenizer, TokenizerOutput
from armkit.tokenizer.quantizer import FSQQuantizer

__all__ = ["Buildable", "ConfigError", "FSQQuantizer", "Tokenizer", "TokenizerOutput", "build", "to_spec"]
