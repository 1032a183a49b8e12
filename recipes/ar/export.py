"""Save and load a trained AR model as a self-contained folder, like the tokenizer's export (tokenizer/hub.py).

    DIR/config.json          format, the ARModel spec (config: form, so no original weights folder is needed), the
                             tokenizer the codes came from (path, fingerprint, codebook size, levels, grid, image size)
    DIR/model.safetensors    every tensor of the ARModel
    DIR/text_tokenizer/      the LM's transformers tokenizer, when it has one (byte-level models need none)

Loading never unpickles and never imports lightning: tensors come from safetensors, objects through
`buildable.build`. `load_ar` also reads a training checkpoint (.ckpt, torch.load(weights_only=True)).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from armkit.backbones.ar import ARModel
from armkit.backbones.codec import HFCodec
from armkit.common.buildable import ConfigError, build, to_spec
from armkit.recipes.ar.export_checks import FORMAT, FORMAT_VERSION, check_checkpoint, check_file_size, read_config
from armkit.recipes.training.checkpoint_read import read_checkpoint as _read_checkpoint
from armkit.tokenizer.export_checks import ConfigValueError
from armkit.tokenizer.hub import ExportError, check_classes, load_checked, read_safetensors, write_safetensors

CONFIG_NAME, WEIGHTS_NAME, TEXT_TOKENIZER = "config.json", "model.safetensors", "text_tokenizer"


class LoadedAR(NamedTuple):
    model: ARModel
    tokenizer: dict[str, Any]  # the codes' tokenizer: path, fingerprint, codebook_size, levels, grid, image_size


def portable_spec(model: ARModel) -> dict[str, Any]:
    """The model's spec with `path:` replaced by the LM's config (its weights are in model.safetensors anyway)."""
    spec = copy.deepcopy(to_spec(model))
    args = spec["init_args"]
    if args.get("path"):
        args["config"] = json.loads(model.lm.config.to_json_string(use_diff=False))
        args["path"] = None
        args["text_tokenizer"] = TEXT_TOKENIZER if isinstance(model.codec, HFCodec) else None
    return spec


def save_ar(model: ARModel, directory: Path | str, *, tokenizer: dict[str, Any], source: str = "") -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = portable_spec(model)
    if spec["init_args"].get("text_tokenizer") == TEXT_TOKENIZER:
        model.codec.tokenizer.save_pretrained(str(directory / TEXT_TOKENIZER))
    write_safetensors(model.state_dict(), directory / WEIGHTS_NAME)
    v = model.vocab
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": spec, "tokenizer": tokenizer,
              "vocab": {"text": v.text_size, "special": v.num_special, "visual": v.codebook_size,
                        "max_grid": v.max_grid, "head": model.head_kind}, "source": source}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def read_checkpoint(path: Path) -> dict:
    """training/checkpoint_io.py's reader, requiring checkpoint['armkit']['ar'] (check_checkpoint checks the rest)."""
    return _read_checkpoint(path, spec="ar", writer="ARModule", state_dict=False)


def is_ar_checkpoint(path: Path | str) -> bool:
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001
        return False
    armkit = checkpoint.get("armkit") if isinstance(checkpoint, dict) else None
    return isinstance(armkit, dict) and isinstance(armkit.get("ar"), dict)


def _build(spec: dict, where: str, folder: Path | None) -> ARModel:
    spec = copy.deepcopy(spec)
    check_classes(spec, where)
    args = spec.get("init_args") or {}
    if folder is not None and args.get("text_tokenizer") == TEXT_TOKENIZER:
        args["text_tokenizer"] = str(folder / TEXT_TOKENIZER)
    try:
        model = build(spec, where=where)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    except (ValueError, TypeError, KeyError, ArithmeticError, OSError) as e:  # the constructor's (or transformers')
        raise ExportError(f"{where}: cannot build the model ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if not isinstance(model, ARModel):
        raise ExportError(f"{where} builds a {type(model).__name__}, not an ARModel")
    return model


def load_ar(path: Path | str) -> LoadedAR:
    """An AR export folder or an ARModule checkpoint -> (ARModel in eval mode, the codes' tokenizer record). Every
    value is checked (export_checks.py) before anything is built; a bad one is one ExportError naming file and key."""
    path = Path(path)
    if path.is_file():
        checked(lambda p: check_file_size(p, checkpoint=True), path)
        checkpoint = read_checkpoint(path)
        checked(check_checkpoint, checkpoint, path)
        model = _build(checkpoint["armkit"]["ar"], f"{path}: armkit.ar", None)
        state = {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
        load_checked(model, state, source=f"{path} (state_dict 'model.*')")
        return LoadedAR(model.eval(), dict(checkpoint["armkit"].get("codes_tokenizer") or {}))
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        raise ExportError(f"{path} is neither an AR export folder nor a checkpoint file")
    if not config_path.is_file():
        raise ExportError(f"{config_path} is missing: not an AR export or checkpoint")
    config = checked(read_config, config_path)
    if (path / WEIGHTS_NAME).is_file():
        checked(check_file_size, path / WEIGHTS_NAME)
    state = read_safetensors(path / WEIGHTS_NAME)
    model = _build(config["model"], f"{config_path}: model", path)
    load_checked(model, state, source=path / WEIGHTS_NAME)
    return LoadedAR(model.eval(), dict(config.get("tokenizer") or {}))


def checked(check, *args):
    """`check(*args)` with its ConfigValueError raised as the ExportError every AR command reports in one line."""
    try:
        return check(*args)
    except ConfigValueError as e:
        raise ExportError(str(e)) from None


def export_ar_checkpoint(ckpt: Path | str, out: Path | str) -> Path:
    """`armkit export` for an ARModule checkpoint."""
    ckpt = Path(ckpt)
    model, tokenizer = load_ar(ckpt)  # checked first: a bad checkpoint is one line before the second read
    checkpoint = read_checkpoint(ckpt)
    return save_ar(model, out, tokenizer=tokenizer,
                   source=f"{ckpt.name} (step {checkpoint.get('global_step', '?')})")
