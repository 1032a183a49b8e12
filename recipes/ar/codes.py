"""Code shards: images encoded once by a tokenizer, for training the AR model (written by `armkit tokenize`).

    CODES/train-000000.tar ...   one per image shard, same names; CODES/train-edit-000000.tar ... edit pairs
    CODES/meta.json              written last: the tokenizer's fingerprint, codebook size, FSQ levels, grid, the
                                 image shards' classes, counts per shard, skipped image samples

A sample is `KEY.codes` (the h*w codes, int32 little-endian, row-major) and `KEY.json` ({"grid": [h, w], "caption",
"label", "tags"}); an edit pair adds `KEY.src` (the source image's codes) and "instruction", "source_grid",
"source_key" in its json. Decoded (`decode_codes`), a sample is

    {"codes": LongTensor [h*w], "grid": (h, w), "caption": str, "label": int, "key": str,
     "edit": None | {"source": LongTensor [h'*w'], "source_grid": (h', w'), "instruction": str}}

and a batch is the list of them under "samples" (sequences are built by the model's module, which owns the text
codec). A sample that does not fit its folder's meta.json (a code outside the codebook, a grid other than the
tokenizer's, a count of codes its grid disagrees with, a negative code, a label that is not an integer >= -1 or is
outside meta.json's "classes", a truncated member or shard) is skipped with a `SkippedSampleWarning` naming shard and
key and counted in the batch's "skipped" (`ARModule` logs it as data/skipped), as bad images are. meta.json itself
is checked when read (`read_meta`): a missing or unusable one is a one-line `CodesMetaError`.

The fingerprint is a sha256 over the tokenizer export's spec and tensors: a model trained on codes of one
tokenizer refuses codes or a tokenizer with another (`check_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


class CodesMetaError(ValueError):
    """A code-shard folder whose meta.json is missing or unusable; the message is one line (`armkit train` prints it
    after "config error:" and exits with status 2)."""


def read_meta(codes: str | Path) -> dict[str, Any]:
    """meta.json of a code-shard folder (or of the folder of a shard path or pattern), checked (`check_meta`)."""
    path = Path(codes).expanduser()
    meta = path / META if path.is_dir() else path.parent / META
    if not meta.is_file():
        raise CodesMetaError(f"{meta} is missing: {codes} are not finished code shards (run `armkit tokenize`)")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = " ".join(str(e).split())
        raise CodesMetaError(f"{meta} is not readable JSON ({type(e).__name__}: {why}); re-run `armkit tokenize` "
                             "to rewrite it") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CodesMetaError(f"{meta}: format is {got!r}, not {FORMAT!r}: image shards, not codes? Run "
                             "`armkit tokenize --tokenizer EXPORT --data SHARDS --out CODES` first")
    check_meta(data, meta)
    return data


def _positive_ints(value: Any, n: int | None = None) -> bool:
    return isinstance(value, list) and bool(value) and (n is None or len(value) == n) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def check_meta(data: dict[str, Any], where: str | Path = META) -> None:
    """Raise CodesMetaError (one line naming the key) unless meta.json holds what the readers and the AR module use:
    tokenizer.{fingerprint, path, codebook_size, levels, grid}, and "classes" (a list of names) if present."""
    tok = data.get("tokenizer")
    if not isinstance(tok, dict):
        raise CodesMetaError(f"{where}: 'tokenizer' is {_kind(tok)}, not an object; re-run `armkit tokenize`")
    need = {"fingerprint": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
            "path": (lambda v: isinstance(v, str), "a string"),
            "codebook_size": (lambda v: _positive_ints([v]), "a positive integer"),
            "levels": (lambda v: _positive_ints(v), "a list of positive integers"),
            "grid": (lambda v: _positive_ints(v, 2), "[h, w], two positive integers")}
    for key, (ok, what) in need.items():
        if key not in tok:
            raise CodesMetaError(f"{where}: tokenizer.{key} is missing; re-run `armkit tokenize`")
        if not ok(tok[key]):
            raise CodesMetaError(f"{where}: tokenizer.{key} = {str(tok[key])[:60]!r} is not {what}; "
                                 "re-run `armkit tokenize`")
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CodesMetaError(f"{where}: classes = {str(classes)[:60]!r} is not a list of class names")


def _kind(value: Any) -> str:
    return "missing" if value is None else f"a {type(value).__name__}"


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
@dataclass(frozen=True)
class CodeLimits:
    """What a code sample must fit (from meta.json): every code in [0, codebook_size), grid equal to the tokenizer's,
    label -1 or in [0, num_classes) (any integer >= -1 when meta.json names no classes)."""

    codebook_size: int
    grid: tuple[int, int]
    num_classes: int | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> CodeLimits:
        tok, classes = meta["tokenizer"], meta.get("classes")
        return cls(int(tok["codebook_size"]), (int(tok["grid"][0]), int(tok["grid"][1])),
                   len(classes) if isinstance(classes, list) else None)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _codes(raw: bytes, grid: Any, what: str, limits: CodeLimits | None) -> tuple[torch.Tensor, tuple[int, int]]:
    if not (isinstance(grid, list) and len(grid) == 2 and all(_int(g) and g > 0 for g in grid)):
        raise BadSample(f"{what} grid {str(grid)[:40]} is not [h, w] (two positive integers)")
    if limits is not None and tuple(grid) != limits.grid:
        raise BadSample(f"{what} grid {grid} is not the tokenizer's grid {list(limits.grid)} (meta.json)")
    if not isinstance(raw, bytes) or len(raw) % 4:
        raise BadSample(f"{what} codes are {len(raw)} bytes, not whole int32s (truncated?)")
    codes = torch.from_numpy(np.frombuffer(raw, dtype="<i4").astype(np.int64))
    if codes.numel() != grid[0] * grid[1]:
        raise BadSample(f"{what} has {codes.numel()} codes, but its grid {grid} needs {grid[0] * grid[1]}")
    if codes.numel() and codes.min() < 0:
        raise BadSample(f"{what} has a negative code ({int(codes.min())})")
    if limits is not None and codes.numel() and codes.max() >= limits.codebook_size:
        raise BadSample(f"{what} has code {int(codes.max())}, outside the codebook of {limits.codebook_size} "
                        "(meta.json)")
    return codes, (grid[0], grid[1])


def _text(info: dict[str, Any], key: str) -> str:
    value = info.get(key, "")
    if not isinstance(value, str):
        raise BadSample(f'"{key}" is a {type(value).__name__}, not a string')
    return value


def decode_codes(raw: dict[str, Any], limits: CodeLimits | None = None) -> dict[str, Any]:
    """A raw code sample -> the sample dict (module docstring); raises BadSample saying what is wrong. With `limits`
    (meta.json's), codes, grids and labels are checked against the tokenizer and the classes too."""
    if "codes" not in raw or "json" not in raw:
        raise BadSample(f"a code sample needs .codes and .json, found {sorted(k for k in raw if k[:2] != '__')}")
    try:
        info = json.loads(raw["json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadSample(f".json is not valid JSON: {e}") from None
    if not isinstance(info, dict):
        raise BadSample(".json is not an object")
    codes, grid = _codes(raw["codes"], info.get("grid"), "the image", limits)
    label = info.get("label", -1)
    if not _int(label) or label < -1:
        raise BadSample(f'"label" {str(label)[:40]!r} is not an integer >= -1')
    if limits is not None and limits.num_classes is not None and label >= limits.num_classes:
        raise BadSample(f'"label" {label} is outside the {limits.num_classes} classes of meta.json')
    caption, _ = _text(info, "caption"), _text(info, "tags")
    edit = None
    if "src" in raw:
        source, source_grid = _codes(raw["src"], info.get("source_grid"), "the edit source", limits)
        edit = {"source": source, "source_grid": source_grid, "instruction": _text(info, "instruction"),
                "source_key": _text(info, "source_key")}
    return {"codes": codes, "grid": grid, "caption": caption, "label": label, "key": str(raw.get("__key__", "?")),
            "edit": edit}


def collate_codes(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"samples": samples, "key": [s["key"] for s in samples]}


def _limits(shards: Any, meta: dict[str, Any] | None) -> CodeLimits:
    """The limits of `meta`, else of the meta.json beside the first shard (a folder, pattern or list)."""
    if meta is None:
        first = shards[0] if isinstance(shards, (list, tuple)) and shards else shards
        meta = read_meta(first)
    return CodeLimits.from_meta(meta)


class _CheckedCodes:
    """Decoding of code samples checked against the codes' meta.json (`meta`, default: the one beside the shards)."""

    def __init__(self, shards: Any, *, meta: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(shards, **kwargs)
        self.limits = _limits(shards, meta)

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        return decode_codes(raw, self.limits)

    collate = staticmethod(collate_codes)


class CodeStream(_CheckedCodes, TrainStream):
    """The training stream (exact resume, split by rank and worker) over code shards; samples are checked against
    `meta` (default: the meta.json beside the shards), bad ones skipped and counted like bad images."""


class CodeReader(_CheckedCodes, ShardReader):
    """One finite pass over code shards (validation, evaluation), checked against `meta` like `CodeStream`."""


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
