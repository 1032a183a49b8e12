"""Save and load a Tokenizer as a self-contained folder, in the manner of huggingface_hub's PyTorchModelHubMixin.

    DIR/config.json          what rebuilds it: the Tokenizer spec (encoder, levels, projections, decoder) and a summary
                             checked at load (codebook size, grid, image size, normalisation, versions)
    DIR/model.safetensors    the tokenizer's tensors: projections, decoder and, when included, the frozen encoder
    DIR/heads.safetensors    optional: trainable loss heads evaluation reuses (sigmoid head and scalars, adapters)
    DIR/README.md            the model card (tokenizer/card.py), Hugging Face style
    DIR/*.pt2, *.onnx        optional compiled programs of encode, embed and decode (tokenizer/graphs.py). They are
                             code, not data: from_pretrained never reads them

The frozen encoder is either included in model.safetensors or referenced: config.json keeps its spec (with its
weights file) and that file's sha256, which loading checks. Loading never unpickles: tensors come from safetensors
only and objects only through `buildable.build`, which refuses classes outside armkit's packages. This module imports
torch, safetensors and armkit's own packages: exported tokenizers load without lightning.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from armkit.common.buildable import ConfigError, build, resolve, to_spec
from armkit.common.cache import assets_dir
from armkit.common.weights import sha256_file
from armkit.tokenizer.card import CONFIG_NAME, HEADS_NAME, WEIGHTS_NAME, render_card
from armkit.tokenizer.export_checks import (
    ConfigValueError,
    check_depth,
    check_levels,
    check_paths,
    check_summary,
    inside,
)
from armkit.tokenizer.graphs import PROGRAMS
from armkit.tokenizer.model import Tokenizer

FORMAT, FORMAT_VERSION = "armkit.tokenizer", 1
CARD_NAME = "README.md"
ENCODER_PREFIX = "encoder."


class ExportError(ValueError):
    """An export that cannot be written as asked, or a folder that does not load: names the file and the key."""


def armkit_version() -> str:
    try:
        return importlib.metadata.version("armkit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# -- tensors ------------------------------------------------------------------------------------------------------
def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Own contiguous copies: safetensors refuses tensors that share storage (tied weights, views)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; anything else (a pickle, a torch zip checkpoint) is refused unread."""
    if not path.is_file():
        raise ExportError(f"{path} is missing")
    try:
        return load_file(str(path))  # parsing safetensors runs no code, whatever the bytes
    except (SafetensorError, OSError, ValueError) as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"PK" or (head[:1] == b"\x80" and 2 <= head[1] <= 5):  # pickle protocol 2-5 opcode
            kind = "a torch.save zip archive" if head == b"PK" else "a Python pickle"
            raise ExportError(f"{path} is {kind}, not safetensors; armkit never unpickles: re-export the "
                              "tokenizer") from None
        raise ExportError(f"{path} is not a valid safetensors file ({e})") from None


def load_checked(module: nn.Module, state: dict[str, torch.Tensor], *, source: Path | str,
                 skip: tuple[str, ...] = ()) -> None:
    """Strict load: every expected key present with its shape and dtype, no extra key, no NaN or inf. Keys under the
    prefixes in `skip` (a referenced encoder, frozen towers: loaded from their own files) are neither expected nor
    allowed."""
    expected = {k: v for k, v in module.state_dict().items() if not (skip and k.startswith(skip))}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing:
        raise ExportError(f"{source}: missing key(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                          f"({len(missing)} of {len(expected)})")
    if unexpected:
        raise ExportError(f"{source}: unexpected key(s) {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key, want in expected.items():
        if tuple(state[key].shape) != tuple(want.shape):
            raise ExportError(f"{source}: key {key!r} has shape {list(state[key].shape)}, the model built from "
                              f"{CONFIG_NAME} expects {list(want.shape)}")
        if state[key].dtype != want.dtype:
            raise ExportError(f"{source}: key {key!r} is {state[key].dtype}, the model built from {CONFIG_NAME} "
                              f"expects {want.dtype}")
        if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
            raise ExportError(f"{source}: key {key!r} holds NaN or inf values")
    module.load_state_dict(state, strict=False)


def first_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """The first key whose tensors differ (or that one side lacks), else None."""
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b or a[key].shape != b[key].shape or not torch.equal(a[key].cpu(), b[key].cpu()):
            return key
    return None


# -- specs --------------------------------------------------------------------------------------------------------
def detached(encoder_spec: dict) -> dict:
    """The encoder's spec with nothing loaded from elsewhere (no weights file, no hub download)."""
    args = dict(encoder_spec.get("init_args") or {})
    if "weights" in args:
        args["weights"] = None
    if "pretrained" in args:
        args["pretrained"] = False if isinstance(args["pretrained"], bool) else None
    return {**encoder_spec, "init_args": args}


def self_contained(spec: dict, tok: Tokenizer) -> dict:
    """A decoder that loads a frozen VAE from a folder (LatentDiT's vae_path) gets that VAE's config instead: its
    weights are in model.safetensors, so the folder is not needed to rebuild it."""
    args = (spec.get("init_args") or {}).get("decoder", {}) or {}
    args = args.get("init_args") or {}
    vae = getattr(tok.decoder, "vae", None)
    if args.get("vae_path") and vae is not None and hasattr(vae, "config"):
        args["vae_config"] = json.loads(json.dumps(dict(vae.config), default=list))
        args["vae_path"], args["vae_subfolder"] = None, None
    return spec


def check_classes(spec: Any, where: str, trust: Sequence[str] = ()) -> None:
    """Resolve every class_path before anything is built, so a bad config fails without constructing anything."""
    if isinstance(spec, dict):
        if "class_path" in spec:
            try:
                resolve(spec["class_path"], trust=trust)
            except ConfigError as e:
                raise ExportError(f"{where}: {e}") from None
        for key, value in spec.items():
            check_classes(value, f"{where}.{key}", trust)
    elif isinstance(spec, list):
        for i, value in enumerate(spec):
            check_classes(value, f"{where}[{i}]", trust)


def frozen_prefixes(module: nn.Module) -> list[str]:
    """State-dict prefixes of frozen parts (text towers, LMs, encoders): referenced by spec, never exported."""
    return [f"{name}." for name, m in module.named_modules() if name and getattr(m, "frozen", False) is True]


def head_state(heads: nn.Module) -> dict[str, torch.Tensor]:
    """The heads' tensors without their frozen parts."""
    skip = tuple(frozen_prefixes(heads))
    return {k: v for k, v in heads.state_dict().items() if not (skip and k.startswith(skip))}


# -- save ---------------------------------------------------------------------------------------------------------
def save_pretrained(tok: Tokenizer, directory: Path | str, *, include_encoder: bool = True, card: dict | None = None,
                    heads: nn.Module | None = None, graphs: bool | dict[str, Any] = False) -> Path:
    """Write `directory` (see the module docstring). include_encoder=False references the encoder's weights file
    instead, after checking that file rebuilds exactly this encoder. heads: a Buildable module (e.g. the LossSet)
    whose non-frozen tensors go to heads.safetensors. graphs: also write torch.export (and ONNX) programs of encode,
    embed and decode; a dict passes options to `graphs.export_programs` (steps, sampler, guidance, onnx).
    card: {"data": str, "metrics": {name: value}, "licenses": {part: licence}, "source": str} for README.md."""
    directory = Path(directory)
    spec = self_contained(copy.deepcopy(to_spec(tok)), tok)
    enc, enc_spec = tok.encoder, spec["init_args"]["encoder"]
    encoder: dict[str, Any] = {"class_path": enc_spec["class_path"], "included": include_encoder}
    state = tok.state_dict()
    if include_encoder:
        spec["init_args"]["encoder"] = detached(enc_spec)
    else:
        weights = (enc_spec.get("init_args") or {}).get("weights")
        if not weights:
            raise ExportError("the encoder has no weights file (random init, or weights from a hub tag), so it can "
                              "only be included: save with include_encoder=True")
        if not enc.frozen:
            raise ExportError("the encoder was trained (frozen=False): its weights differ from its file; include it")
        path = Path(weights)
        if not path.is_file():
            raise ExportError(f"encoder weights file {path} not found; it is needed to reference the encoder")
        difference = first_difference(build(enc_spec, where="encoder").state_dict(), enc.state_dict())
        if difference is not None:
            raise ExportError(f"the encoder rebuilt from {path} differs from this tokenizer's at {difference!r}; "
                              "include the encoder instead of referencing that file")
        encoder.update(weights=str(path.resolve()), file_name=path.name, sha256=sha256_file(path),
                       bytes=path.stat().st_size)
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    encoder.update(width=enc.width, input_size=list(enc.image_size), grid=list(enc.grid), mean=list(enc.mean),
                   std=list(enc.std))
    q = tok.quantizer
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "armkit_version": armkit_version(),
        "torch_version": torch.__version__,
        "codebook_size": tok.codebook_size, "num_tokens": tok.num_tokens, "grid": list(tok.grid),
        "image_size": list(tok.image_size), "levels": list(q.levels), "num_codebooks": q.num_codebooks,
        "embed_dim": tok.embed_dim, "encoder": encoder,
        "decoder": spec["init_args"].get("decoder"), "tokenizer": spec, "heads": None, "graphs": None,
    }
    directory.mkdir(parents=True, exist_ok=True)
    stale = [directory / HEADS_NAME, *directory.glob("*.pt2"), *directory.glob("*.onnx"), *directory.glob("*.pt")]
    for path in stale:  # from an earlier export into this folder
        path.unlink(missing_ok=True)
    write_safetensors(state, directory / WEIGHTS_NAME)
    if heads is not None:
        config["heads"] = to_spec(heads)
        write_safetensors(head_state(heads), directory / HEADS_NAME)
    if graphs:
        from armkit.tokenizer.graphs import export_programs

        config["graphs"] = export_programs(tok, directory, **(graphs if isinstance(graphs, dict) else {}))
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (directory / CARD_NAME).write_text(render_card(config, card or {}))
    return directory


# -- load ---------------------------------------------------------------------------------------------------------
def read_config(directory: Path) -> dict:
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise ExportError(f"{directory} is not a folder (a local export folder, or a hub id 'org/name' with "
                          "huggingface_hub installed)")
    if not path.is_file():
        raise ExportError(f"{path} is missing: not an armkit export")
    try:
        config = json.loads(path.read_text(), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ExportError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise ExportError(f"{path} is nested too deeply; not an armkit export") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{path}: format is not {FORMAT!r}; not an armkit tokenizer export")
    fv = config.get("format_version")
    if isinstance(fv, int) and not isinstance(fv, bool) and fv > FORMAT_VERSION:
        raise ExportError(f"{path}: format_version {fv!r} is newer than this armkit reads ({FORMAT_VERSION}); "
                          "upgrade armkit")
    for key in ("tokenizer", "encoder"):
        if not isinstance(config.get(key), dict):
            raise ExportError(f"{path}: key {key!r} is missing or not an object")
    try:
        check_depth(config, str(path))
        check_summary(config, str(path))
        check_levels(config["tokenizer"], f"{path}: tokenizer")
    except ConfigValueError as e:
        raise ExportError(str(e)) from None
    return config


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def allowed_roots(directory: Path, paths: Sequence[Path | str]) -> list[Path]:
    """The folders a config may name files in: the export folder, armkit's asset cache and the caller's `paths`."""
    return [Path(directory), assets_dir(), *(Path(p) for p in paths)]


def checked_paths(spec: Any, where: str, roots: Sequence[Path]) -> None:
    try:
        check_paths(spec, where, roots)
    except ConfigValueError as e:
        raise ExportError(str(e)) from None


def locate_encoder_weights(directory: Path, encoder: dict, override: Path | str | None,
                           roots: Sequence[Path] = ()) -> Path:
    """The referenced encoder file: `override` (the caller's), else the recorded path when it lies inside `roots`
    (the export folder and the caller's `paths`), else a file of the recorded name in `directory`; its sha256 must
    match the recorded one. A path recorded elsewhere is never followed."""
    recorded, name = encoder.get("weights"), encoder.get("file_name")
    if not isinstance(recorded, str) or not recorded:
        recorded = None
    if name is not None and (not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..")):
        raise ExportError(f"{directory / CONFIG_NAME}: encoder.file_name {name!r} must be a plain file name")
    own = name in (CONFIG_NAME, WEIGHTS_NAME, HEADS_NAME, CARD_NAME, *PROGRAMS.values())  # the export's files
    candidates = [Path(override)] if override is not None else [
        Path(p) for p in ((recorded if recorded and inside(recorded, roots or [directory]) else None),
                          directory / name if name and not own else None) if p]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ExportError(f"{directory / CONFIG_NAME}: the encoder's weights are referenced, not included, and the "
                          f"file was not found (looked at {[str(p) for p in candidates]}; the recorded path "
                          f"{recorded!r} is followed only inside the export folder or the paths you allow); put the "
                          "file in the export folder or pass encoder_weights=")
    want, got = encoder.get("sha256"), sha256_file(path)
    if got != want:
        raise ExportError(f"encoder weights {path}: sha256 {got} does not match the {want} recorded in "
                          f"{directory / CONFIG_NAME}; this is not the encoder the tokenizer was trained with")
    return path


def local_folder(directory: Path | str, revision: str | None = None) -> Path:
    """A local export folder, or a hub id ('org/name') downloaded through huggingface_hub (tokenizer/remote.py)."""
    from armkit.tokenizer import remote

    return remote.download(str(directory), revision=revision) if remote.is_repo_id(directory) else Path(directory)


def from_pretrained(directory: Path | str, *, encoder_weights: Path | str | None = None,
                    trust: Sequence[str] = (), paths: Sequence[Path | str] = (),
                    revision: str | None = None) -> Tokenizer:
    """Rebuild the Tokenizer saved by `save_pretrained`, in eval mode; see the module docstring. `directory` is a
    folder or a hub id. `trust` names your own packages whose classes the export may use (a fifth loss, an encoder
    of yours); nothing else is imported. `paths` names folders outside the export whose files config.json may name
    (e.g. a referenced encoder's file); no other path in config.json is followed."""
    directory = local_folder(directory, revision)
    roots = allowed_roots(directory, paths)
    config = read_config(directory)
    where = str(directory / CONFIG_NAME)
    spec = copy.deepcopy(config["tokenizer"])
    if "class_path" not in spec:
        raise ExportError(f"{where}: tokenizer has no class_path")
    check_classes(spec, f"{where}: tokenizer", trust)
    if not issubclass(resolve(spec["class_path"], trust=trust), Tokenizer):
        raise ExportError(f"{where}: tokenizer.class_path {spec['class_path']!r} is not a Tokenizer")
    args = spec.setdefault("init_args", {})
    if not isinstance(args.get("encoder"), dict):
        raise ExportError(f"{where}: tokenizer.init_args.encoder is missing")
    included = config["encoder"]["included"]  # a JSON boolean (read_config checks)
    args["encoder"] = detached(args["encoder"])  # never a hub download; the weights come from here or below
    checked_paths(spec, f"{where}: tokenizer", roots)
    if not included:
        path = locate_encoder_weights(directory, config["encoder"], encoder_weights, roots)
        args["encoder"]["init_args"]["weights"] = str(path)
    state = read_safetensors(directory / WEIGHTS_NAME)  # a bad file fails before any model is built
    try:
        tok = build(spec, where=f"{where}: tokenizer", trust=trust)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    load_checked(tok, state, source=directory / WEIGHTS_NAME, skip=() if included else (ENCODER_PREFIX,))
    for key in ("codebook_size", "num_tokens", "embed_dim"):
        if key in config and config[key] != getattr(tok, key):
            raise ExportError(f"{where}: {key}={config[key]} but the tokenizer built from the spec has "
                              f"{getattr(tok, key)}")
    # The normalisation the tokenizer was trained with wins over a library's defaults, which may change.
    tok.encoder.mean = tuple(float(v) for v in config["encoder"].get("mean", tok.encoder.mean))
    tok.encoder.std = tuple(float(v) for v in config["encoder"].get("std", tok.encoder.std))
    return tok.eval()


def load_heads(directory: Path | str, *, trust: Sequence[str] = (), paths: Sequence[Path | str] = (),
               revision: str | None = None) -> nn.Module | None:
    """The loss heads saved beside the tokenizer (e.g. a LossSet), frozen parts rebuilt from their own specs and
    files (only inside the export folder, the asset cache or the caller's `paths`); None when the export has none."""
    directory = local_folder(directory, revision)
    config = read_config(directory)
    if not config.get("heads"):
        return None
    where = f"{directory / CONFIG_NAME}: heads"
    check_classes(config["heads"], where, trust)
    checked_paths(config["heads"], where, allowed_roots(directory, paths))
    state = read_safetensors(directory / HEADS_NAME)
    try:
        heads = build(copy.deepcopy(config["heads"]), where=where, trust=trust)
    except ConfigError as e:
        raise ExportError(str(e)) from None
    load_checked(heads, state, source=directory / HEADS_NAME, skip=tuple(frozen_prefixes(heads)))
    return heads.eval()
