"""`armkit export --hf`: an AR checkpoint or AR export folder -> a standard Hugging Face causal-LM folder.

    armkit export --ckpt runs/ar/last.ckpt --out ar-hf --hf        # or --ckpt an `armkit export` AR folder
    python -c "from armkit.recipes.ar.hf_export import export_ar_hf; export_ar_hf('runs/ar/last.ckpt', 'ar-hf')"

The folder loads with `transformers.AutoModelForCausalLM.from_pretrained(DIR)` (no armkit import) and samples
armkit's images with the standalone logits processors of backbones/hf_processors.py; see backbones/hf_export.py.
Full head only: the factorized head is refused with one line.
"""

from __future__ import annotations

from pathlib import Path

from armkit.backbones.hf_export import HFExportError, save_hf
from armkit.recipes.ar.export import load_ar
from armkit.tokenizer.hub import ExportError


def export_ar_hf(source: Path | str, out: Path | str) -> Path:
    """load_ar(source) (checkpoint or export folder) -> save_hf(out) with the codes' tokenizer record (grid,
    fingerprint) in armkit_sequence.json."""
    model, tokenizer = load_ar(source)
    grid = tokenizer.get("grid")
    try:
        return save_hf(model, out, tokenizer=tokenizer, grid=tuple(grid) if grid else None,
                       meta={"source": str(source)})
    except HFExportError as e:
        raise ExportError(f"{source}: {e}") from None
