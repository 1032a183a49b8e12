"""Code shards: images encoded once by a tokenizer, for training the AR model (written by `armkit tokenize`).

    CODES/train-000000.tar ...   one per image shard, same names; CODES/train-edit-000000.tar ... edit pairs
    CODES/meta.json              written last: the tokenizer's fingerprint, codebook size, FSQ levels, grid, counts

A sample is `KEY.codes` (the h*w codes, int32 little-endian, row-major) and `KEY.json` ({"grid": [h, w], "caption",
"label", "tags"}); an edit pair adds `KEY.src` (the source image's codes) and "instruction", "source_grid",
"source_key" in its json. Decoded (`decode_codes`), a sample is

    {"codes": LongTensor [h*w], "grid": (h, w), "caption": str, "label": int, "key": str,
     "edit": None | {"source": LongTensor [h'*w'], "source_grid": (h', w'), "instruction": str}}

and a batch is the list of them under "samples" (sequences are built by the model's module, which owns the text
codec). The fingerprint is a sha256 over the tokenizer export's spec and tensors: a model trained on codes of one
tokenizer refuses codes or a tokenizer with another (`check_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from armkit.recipes.data.module import ShardDataModule
from armkit.recipes.data.reader import BadSample, ShardReader, TrainStream

FORMAT = "armkit.codes"
META = "meta.json"


class FingerprintError(ValueError):
    """Codes, a tokenizer or a model that come from different tokenizers."""


def tokenizer_fingerprint(export: str | Path) -> str:
    """sha256 of a tokenizer export's spec (config.json's "tokenizer" and "encoder") and its weight files."""
    folder = Path(export)
    config = json.loads((folder / "config.json").read_text())
    digest = hashlib.sha256(json.dumps({k: config.get(k) for k in ("tokenizer", "encoder", "levels", "grid")},
                                       sort_keys=True).encode())
    for name in ("model.safetensors",):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_fingerprint(expected: str, got: str, *, expected_from: str, got_from: str) -> None:
    if expected != got:
        raise FingerprintError(f"tokenizer mismatch: {expected_from} was made with tokenizer {expected[:16]}... but "
                               f"{got_from} with tokenizer {got[:16]}...; codes, tokenizer and AR model must come "
                               "from the same tokenizer export (re-run `armkit tokenize` with it)")


def read_meta(codes: str | Path) -> dict[str, Any]:
    """meta.json of a code-shard folder (or of the folder of a shard path or pattern)."""
    path = Path(codes).expanduser()
    meta = path / META if path.is_dir() else path.parent / META
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing: {codes} are not finished code shards (run `armkit tokenize`)")
    data = json.loads(meta.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{meta}: format is {data.get('format')!r}, not {FORMAT!r}: image shards, not codes? Run "
                         "`armkit tokenize --tokenizer EXPORT --data SHARDS --out CODES` first")
    return data


# -- writing ------------------------------------------------------------------------------------------------------
def code_bytes(codes: torch.Tensor | list[int]) -> bytes:
    return np.asarray(codes, dtype="<i4").tobytes()


def code_sample(key: str, codes: torch.Tensor, grid: tuple[int, int], *, caption: str, label: int, tags: str,
                edit: dict[str, Any] | None = None) -> dict[str, Any]:
    """A code sample for `webdataset.TarWriter(encoder=False)`; `edit`: {"source", "source_grid", "instruction",
    "source_key"}."""
    info: dict[str, Any] = {"grid": list(grid), "caption": caption, "label": int(label), "tags": tags}
    sample = {"__key__": key, "codes": code_bytes(codes)}
    if edit is not None:
        sample["src"] = code_bytes(edit["source"])
        info.update(instruction=edit["instruction"], source_grid=list(edit["source_grid"]),
                    source_key=edit["source_key"])
    sample["json"] = json.dumps(info, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return sample


# -- reading ------------------------------------------------------------------------------------------------------
def _codes(raw: bytes, grid: Any, what: str) -> tuple[torch.Tensor, tuple[int, int]]:
    if not (isinstance(grid, list) and len(grid) == 2 and all(isinstance(g, int) and g > 0 for g in grid)):
        raise BadSample(f"{what} grid {grid!r} is not [h, w]")
    if len(raw) % 4:
        raise BadSample(f"{what} codes are {len(raw)} bytes, not whole int32s")
    codes = torch.from_numpy(np.frombuffer(raw, dtype="<i4").astype(np.int64))
    if codes.numel() != grid[0] * grid[1]:
        raise BadSample(f"{what} has {codes.numel()} codes, but its grid {grid} needs {grid[0] * grid[1]}")
    if codes.numel() and codes.min() < 0:
        raise BadSample(f"{what} has a negative code")
    return codes, (grid[0], grid[1])


def decode_codes(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw code sample -> the sample dict (module docstring); raises BadSample saying what is wrong."""
    if "codes" not in raw or "json" not in raw:
        raise BadSample(f"a code sample needs .codes and .json, found {sorted(k for k in raw if k[:2] != '__')}")
    try:
        info = json.loads(raw["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadSample(f".json is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise BadSample(".json is not an object")
    codes, grid = _codes(raw["codes"], info.get("grid"), "the image")
    edit = None
    if "src" in raw:
        source, source_grid = _codes(raw["src"], info.get("source_grid"), "the edit source")
        edit = {"source": source, "source_grid": source_grid, "instruction": str(info.get("instruction", ""))}
    return {"codes": codes, "grid": grid, "caption": str(info.get("caption", "")),
            "label": int(info.get("label", -1)), "key": str(raw.get("__key__", "?")), "edit": edit}


def collate_codes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"samples": samples, "key": [s["key"] for s in samples]}


class CodeStream(TrainStream):
    """The training stream (exact resume, split by rank and worker) over code shards."""

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        return decode_codes(raw)

    collate = staticmethod(collate_codes)


class CodeReader(ShardReader):
    """One finite pass over code shards (validation, evaluation)."""

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        return decode_codes(raw)

    collate = staticmethod(collate_codes)


class CodeDataModule(ShardDataModule):
    """`ShardDataModule` over code shards: train/val are code folders written by `armkit tokenize` (a folder gives
    its train-*.tar / val-*.tar, edit shards included). `meta` is the train folder's meta.json (the tokenizer's
    fingerprint, codebook size, levels, grid), which the AR module checks its model against."""

    stream_class, reader_class = CodeStream, CodeReader

    def __init__(self, *, train: str, val: str | None = None, batch_size: int, num_workers: int = 0, seed: int = 0,
                 shuffle_buffer: int = 1000, val_limit: int | None = None) -> None:
        super().__init__(train=train, val=val, image_size=1, batch_size=batch_size, num_workers=num_workers,
                         seed=seed, shuffle_buffer=shuffle_buffer, val_limit=val_limit)
        self.meta = read_meta(train)
        if val is not None:
            check_fingerprint(self.meta["tokenizer"]["fingerprint"], read_meta(val)["tokenizer"]["fingerprint"],
                              expected_from=f"data.train ({train})", got_from=f"data.val ({val})")
