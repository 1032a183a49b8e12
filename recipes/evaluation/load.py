"""Load what `armkit eval` evaluates: a training checkpoint or an export folder, with the loss heads when present.

A checkpoint (.ckpt from `armkit train`) is read with torch.load(weights_only=True); the tokenizer and the LossSet are
rebuilt from the specs it carries (checkpoint["armkit"]) and loaded strictly from its "tokenizer." / "losses." tensors,
except the frozen parts it left out (checkpoint["armkit_frozen"]): those load from their files, whose sha256 must match.
An export folder loads through `Tokenizer.from_pretrained` and `tokenizer.hub.load_heads`. Lightning is never imported.

A checkpoint or export is input: the files its specs and records name are followed (built from, hashed) only inside
its own folder, armkit's asset cache (`asset:NAME`) and the folders the caller allows (`paths`, `--allow-path`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from armkit.common.cache import assets_dir
from armkit.common.weights import local_path, sha256_file
from armkit.recipes.tokenizer.export import heads_from_checkpoint, tokenizer_from_checkpoint
from armkit.recipes.training.checkpoint_read import read_checkpoint
from armkit.tokenizer import hub
from armkit.tokenizer.export_checks import ConfigValueError, check_paths, inside
from armkit.tokenizer.losses import LossSet
from armkit.tokenizer.model import Tokenizer


class Loaded(NamedTuple):
    tokenizer: Tokenizer
    heads: LossSet | None  # None: no loss heads (zero-shot, retrieval and caption metrics are skipped)
    source: dict[str, Any]  # what was loaded, for metrics.json
    heads_note: str | None  # why there are no heads


def describe_losses(heads: LossSet | None) -> dict[str, Any]:
    """{name: {"class", "enabled", "weight"}}: which heads were trained."""
    if heads is None:
        return {}
    return {name: {"class": type(loss).__name__, "enabled": loss.enabled, "weight": loss.weight}
            for name, loss in heads.items()}


def checkpoint_roots(ckpt: Path, paths: Sequence[Path | str] = ()) -> list[Path]:
    """Where a checkpoint's specs and records may name files: its folder, the asset cache and the caller's `paths`."""
    return [ckpt.parent, assets_dir(), *(Path(p) for p in paths)]


def check_frozen_files(checkpoint: dict, ckpt: Path, paths: Sequence[Path | str] = ()) -> dict[str, str]:
    """{state-dict prefix: source} of the frozen parts the checkpoint left out (checkpoint["armkit_frozen"], written by
    TokenizerModule); each source file must still have the sha256 it had in training. A source outside
    `checkpoint_roots` is refused before anything is read or hashed."""
    left_out = checkpoint.get("armkit_frozen") or {}
    if not isinstance(left_out, dict):
        raise hub.ExportError(f"{ckpt}: armkit_frozen is a {type(left_out).__name__}, not a mapping")
    roots = checkpoint_roots(ckpt, paths)
    for prefix, record in left_out.items():
        if not (isinstance(prefix, str) and isinstance(record, dict) and isinstance(record.get("source"), str)
                and isinstance(record.get("sha256"), str)):
            raise hub.ExportError(f"{ckpt}: armkit_frozen[{prefix!r}] must be {{'source': str, 'sha256': str}}")
        source = record["source"]
        if not source.startswith("asset:") and not inside(source, roots):
            raise hub.ExportError(f"{ckpt}: armkit_frozen[{prefix!r}] names {source!r}, outside "
                                  f"{[str(r) for r in roots]}; pass --allow-path (paths= in Python) for that folder "
                                  "if it holds the frozen model you trained with")
        path = local_path(source)
        if not path.exists():
            raise FileNotFoundError(f"{ckpt}: the frozen part {prefix[:-1]} loads from {record['source']} ({path}), "
                                    "which is missing here (for the demo's models run `armkit assets`)")
        if sha256_file(path) != record["sha256"]:
            raise ValueError(f"{ckpt}: the frozen part {prefix[:-1]} was trained with {record['source']} (sha256 "
                             f"{record['sha256'][:12]}...), which has changed since; restore that file")
    return {prefix: record["source"] for prefix, record in left_out.items()}


def load_for_eval(path: str | Path, *, paths: Sequence[Path | str] = ()) -> Loaded:
    """A .ckpt file or an export folder -> Loaded; a clear error for anything else. `paths`: folders outside the
    checkpoint's (or export's) own whose files its specs may name."""
    path = Path(path).expanduser()
    if path.is_file():
        checkpoint = read_checkpoint(path, spec="tokenizer", writer="TokenizerModule")
        try:
            for key in ("tokenizer", "losses"):
                check_paths(checkpoint["armkit"].get(key), f"{path}: armkit.{key}", checkpoint_roots(path, paths))
        except ConfigValueError as e:
            raise hub.ExportError(str(e)) from None
        left_out = check_frozen_files(checkpoint, path, paths)
        tok = tokenizer_from_checkpoint(checkpoint, path, include_encoder=True)
        heads = heads_from_checkpoint(checkpoint, path, left_out=left_out)
        note = None if heads is not None else f"{path} holds no loss spec (checkpoint['armkit']['losses'])"
        source = {"kind": "checkpoint", "path": str(path.resolve()), "sha256": sha256_file(path),
                  "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step"),
                  "frozen_files": checkpoint.get("armkit_frozen") or {}}
    elif path.is_dir() and (path / hub.CONFIG_NAME).is_file():
        tok = Tokenizer.from_pretrained(path, paths=paths)
        loaded = hub.load_heads(path, paths=paths)
        if loaded is not None and not isinstance(loaded, LossSet):
            raise hub.ExportError(f"{path / hub.CONFIG_NAME}: heads build a {type(loaded).__name__}, not a LossSet")
        heads = loaded
        note = None if heads is not None else f"the export {path} has no heads (exported with --no-heads)"
        files = [hub.WEIGHTS_NAME] + ([hub.HEADS_NAME] if heads is not None else [])
        source = {"kind": "export", "path": str(path.resolve()),
                  "sha256": {name: sha256_file(path / name) for name in files}}
    else:
        raise FileNotFoundError(f"--tokenizer {path}: expected a checkpoint file from `armkit train` (.ckpt) or an "
                                f"export folder with {hub.CONFIG_NAME} (`armkit export`)")
    tok.eval()
    q = tok.quantizer
    source.update(levels=list(q.levels), num_codebooks=q.num_codebooks, codebook_size=tok.codebook_size,
                  num_tokens=tok.num_tokens, grid=list(tok.grid), embed_dim=tok.embed_dim,
                  decoder=type(tok.decoder).__name__ if tok.decoder is not None else None,
                  losses=describe_losses(heads))
    return Loaded(tok, heads, source, note)
