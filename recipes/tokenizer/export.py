"""The work behind `armkit export`: a training checkpoint -> a self-contained tokenizer folder (hub.save_pretrained),
with the card's data, metrics and licences found beside the checkpoint.

The command's arguments and its full description are in recipes/commands/export.py.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from armkit.common.buildable import ConfigError, build
from armkit.common.cache import MANIFEST, assets_dir
from armkit.recipes.training.checkpoint_read import read_checkpoint
from armkit.tokenizer.export_checks import ConfigValueError, check_paths
from armkit.tokenizer.hub import (
    ENCODER_PREFIX,
    ExportError,
    detached,
    first_difference,
    frozen_prefixes,
    load_checked,
    save_pretrained,
)
from armkit.tokenizer.losses import LossSet
from armkit.tokenizer.model import Tokenizer

WEIGHT_KEYS = ("weights", "path", "vae_path")
UNKNOWN_LICENSE = "see the weights' source"






def export_checkpoint(ckpt: Path | str, out: Path | str, *, include_encoder: bool = True,
                      metrics: Path | str | None = None, data: str | None = None, heads: bool = True,
                      graphs: bool | dict = False, paths: Sequence[Path | str] = ()) -> Path:
    """Write the export of `ckpt` to `out`. The files the checkpoint's specs name are followed only inside its folder,
    the asset cache and `paths`."""
    ckpt = Path(ckpt)
    checkpoint = read_checkpoint(ckpt, spec="tokenizer", writer="TokenizerModule")
    roots = [ckpt.parent, assets_dir(), *(Path(p) for p in paths)]
    try:
        for key in ("tokenizer", "losses"):
            check_paths(checkpoint["armkit"].get(key) if heads or key == "tokenizer" else None,
                        f"{ckpt}: armkit.{key}", roots)
    except ConfigValueError as e:
        raise ExportError(str(e)) from None
    tok = tokenizer_from_checkpoint(checkpoint, ckpt, include_encoder=include_encoder)
    loss_heads = heads_from_checkpoint(checkpoint, ckpt) if heads else None
    specs = {"tokenizer": checkpoint["armkit"]["tokenizer"], "losses": checkpoint["armkit"].get("losses")}
    found, data_licenses = find_data(ckpt, checkpoint)
    card = {"data": data or found, "metrics": find_metrics(ckpt, metrics),
            "licenses": {**find_licenses(specs), **data_licenses},
            "source": f"`{ckpt.name}` (epoch {checkpoint.get('epoch', '?')}, "
                      f"step {checkpoint.get('global_step', '?')})"}
    return save_pretrained(tok, out, include_encoder=include_encoder, card=card, heads=loss_heads, graphs=graphs)


# -- the checkpoint -----------------------------------------------------------------------------------------------
def substate(checkpoint: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def tokenizer_from_checkpoint(checkpoint: dict, ckpt: Path, *, include_encoder: bool) -> Tokenizer:
    """The trained Tokenizer. An included encoder comes from the checkpoint's tensors (its file is not needed); a
    referenced one is built from its file, then checked equal to the checkpoint's tensors by save_pretrained."""
    spec = copy.deepcopy(checkpoint["armkit"]["tokenizer"])
    state = substate(checkpoint, "tokenizer.")
    has_encoder = any(k.startswith(ENCODER_PREFIX) for k in state)
    if include_encoder and has_encoder:
        spec["init_args"]["encoder"] = detached(spec["init_args"]["encoder"])
    tok = build(spec, where=f"{ckpt}: armkit.tokenizer")
    if not isinstance(tok, Tokenizer):
        raise ExportError(f"{ckpt}: armkit.tokenizer builds a {type(tok).__name__}, not a Tokenizer")
    load_checked(tok, state, source=f"{ckpt} (state_dict 'tokenizer.*')", skip=() if has_encoder else (ENCODER_PREFIX,))
    return tok.eval()


def heads_from_checkpoint(checkpoint: dict, ckpt: Path, *, left_out: dict[str, str] | None = None) -> LossSet | None:
    """The LossSet with its trained heads, or None when the checkpoint has no loss spec.

    For an export (`left_out` None) its frozen parts (text tower, LM) are rebuilt from their own specs and must equal
    the checkpoint's, since the export references them by spec. For evaluation (`left_out`: the frozen parts whose
    files are missing, from `check_frozen_files`) those parts keep what their spec builds and the rest is loaded."""
    spec = checkpoint["armkit"].get("losses")
    if not spec:
        return None
    try:
        heads = build(copy.deepcopy(spec), where=f"{ckpt}: armkit.losses")
    except (ConfigError, FileNotFoundError, OSError) as e:
        raise ExportError(f"cannot rebuild the loss heads ({e}); export with --no-heads to skip them") from None
    if not isinstance(heads, LossSet):
        raise ExportError(f"{ckpt}: armkit.losses builds a {type(heads).__name__}, not a LossSet")
    state = substate(checkpoint, "losses.")
    if left_out is not None:
        skip = tuple(p.removeprefix("losses.") for p in left_out if p.startswith("losses."))
        load_checked(heads, state, source=f"{ckpt} (state_dict 'losses.*')", skip=skip)
        return heads.eval()
    skip = tuple(frozen_prefixes(heads))
    frozen_saved = {k: v for k, v in state.items() if skip and k.startswith(skip)}
    frozen_built = {k: v for k, v in heads.state_dict().items() if skip and k.startswith(skip)}
    difference = first_difference(frozen_saved, frozen_built) if frozen_saved else None
    if difference is not None:
        raise ExportError(f"{ckpt}: frozen loss part {difference!r} differs from the one its spec rebuilds, so it "
                          "cannot be referenced by spec; export with --no-heads")
    load_checked(heads, {k: v for k, v in state.items() if k not in frozen_saved},
                 source=f"{ckpt} (state_dict 'losses.*')", skip=skip)
    return heads.eval()


# -- the model card -----------------------------------------------------------------------------------------------
def near(ckpt: Path, name: str) -> Path | None:
    """`name` in the checkpoint's folder or the run folder above it (Lightning: RUN/checkpoints/x.ckpt)."""
    return next((p for p in (ckpt.parent / name, ckpt.parent.parent / name) if p.is_file()), None)


def find_data(ckpt: Path, checkpoint: dict) -> tuple[str, dict[str, str]]:
    """(description, {part: licence}) of the training data: the data module's arguments from the checkpoint (or the
    run's LightningCLI config.yaml), and the source and licence `armkit data` wrote to the shards' meta.json."""
    data = checkpoint.get("datamodule_hyper_parameters")
    config = near(ckpt, "config.yaml")
    if not data and config is not None:
        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data")
        except yaml.YAMLError:
            data = None
    if not isinstance(data, dict) or not data:
        return "unknown", {}
    args = data.get("init_args", data)
    name = f"`{data['class_path']}`: " if "class_path" in data else ""
    shown = [f"{k}=`{v}`" for k, v in args.items()
             if not str(k).startswith("_") and isinstance(v, (str, int, float, bool))]
    text, licenses = name + (", ".join(shown) or "no arguments recorded"), {}
    for split in ("train", "val"):
        meta = shard_meta(args.get(split))
        if meta is not None:
            count = (meta.get("splits") or {}).get(split, {}).get("count", "?")
            text += f"\n\n{split}: {count} images from `{meta.get('source', '?')}` ({meta.get('licence', '?')})"
            licenses[f"{split} data ({meta.get('source', '?')})"] = str(meta.get("licence", "unknown"))
    return text, licenses


def shard_meta(shards: Any) -> dict | None:
    """The meta.json `armkit data` writes beside the shards of a folder, .tar, glob or brace pattern."""
    if not isinstance(shards, str) or not shards:
        return None
    path = Path(shards).expanduser()
    meta = path / "meta.json" if path.is_dir() else path.parent / "meta.json"
    try:
        return json.loads(meta.read_text()) if meta.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def find_metrics(ckpt: Path, explicit: Path | str | None) -> dict[str, Any]:
    """Scalars of an eval metrics.json (nested keys joined with '/'); {} when there is none."""
    path = Path(explicit) if explicit is not None else near(ckpt, "metrics.json")
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"--metrics {path} not found")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON ({e})") from None
    flat: dict[str, Any] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}/{k}" if key else str(k))
        elif isinstance(node, bool) or not isinstance(node, (int, float)):
            return
        else:
            flat[key] = round(node, 4) if isinstance(node, float) else node

    walk(raw, "")
    return flat


def weight_files(spec: Any, where: str) -> list[tuple[str, str]]:
    """(where, path) of every weights file a spec names."""
    found = []
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key in WEIGHT_KEYS and isinstance(value, str) and value:
                found.append((where, value))
            found += weight_files(value, f"{where}.{key}" if key != "init_args" else where)
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            found += weight_files(value, f"{where}[{i}]")
    return found


def asset_license(path: Path) -> str | None:
    """The licence `armkit assets` recorded for `path`: the nearest assets.json above it (recipes/data/assets.py's
    manifest: {"assets": {NAME: {"path", "model_licence", "licence", ...}}}, files under <assets>/NAME/)."""
    target = path.expanduser().resolve()
    for folder in list(target.parents)[:4]:
        index = folder / MANIFEST
        if not index.is_file():
            continue
        try:
            assets = json.loads(index.read_text()).get("assets") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return None
        top = target.relative_to(folder).parts[0]
        for name, entry in assets.items() if isinstance(assets, dict) else ():
            place = Path(str(entry.get("path") or folder / name)).resolve() if isinstance(entry, dict) else None
            if place is None or not (name == top or target == place or place in target.parents):
                continue
            model, package = entry.get("model_licence"), entry.get("licence")
            if model and package and model != package:
                return f"{model} (model); package {package}"
            return str(model or package) if (model or package) else None
        return None
    return None


def find_licenses(specs: dict[str, Any]) -> dict[str, str]:
    try:
        code = importlib.metadata.metadata("armkit").get("License") or "see the armkit repository"
    except importlib.metadata.PackageNotFoundError:
        code = "see the armkit repository"
    licenses = {"armkit code": code}
    files = weight_files(specs, "")
    for where, path in files:
        licenses[f"{where.lstrip('.')} (`{Path(path).name}`)"] = asset_license(Path(path)) or UNKNOWN_LICENSE
    if not any(where.startswith(".tokenizer.encoder") for where, _ in files):
        licenses["encoder weights"] = UNKNOWN_LICENSE
    return licenses
