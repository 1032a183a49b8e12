"""armkit: a tokenizer-first toolkit for unified discrete visual tokens (the ARM tokenizer as reusable parts).

The repository's top-level folders are installed as one package: `armkit.tokenizer`, `armkit.decoders`,
`armkit.backbones`, `armkit.recipes` and `armkit.common` (shared plumbing: specs, freezing, weight files). Names are
resolved lazily, so `import armkit` costs nothing until a part is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {"Tokenizer": "armkit.tokenizer.model", "TokenizerOutput": "armkit.tokenizer.model",
         "build": "armkit.common.buildable", "to_spec": "armkit.common.buildable",
         "ConfigError": "armkit.common.buildable"}

__all__ = ["ConfigError", "Tokenizer", "TokenizerOutput", "__version__", "build", "to_spec"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'armkit' has no attribute {name!r}")
