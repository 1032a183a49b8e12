"""The work behind `armkit tokenize`: image shards -> code shards, resumable, with the tokenizer's fingerprint in
meta.json.

Image samples that cannot be used are skipped like the shard reader skips them (a `SkippedSampleWarning` naming the
shard and key) and counted by reason in meta.json's "skipped" ({"count", "by_reason", "details"}); so is a sample
whose key is not a safe member name (`safe_key`: `../../x`, `/abs/x` or odd characters would otherwise become the
code shard's member names) or whose label is outside meta.json's classes. Per split, meta.json records each code
shard's sample count (so a code shard cut short later is counted exactly by the reader) and the samples skipped.

The command's arguments and its full description are in recipes/commands/tokenize.py.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import webdataset as wds

from armkit.recipes.ar.codes import (
    FORMAT,
    META,
    CodeReader,
    check_fingerprint,
    code_sample,
    tokenizer_fingerprint,
)
from armkit.recipes.data.reader import BadSample, SkippedSampleWarning, collate, decode_sample, expand_shards
from armkit.recipes.data.tar_stream import expected_counts, raw_samples
from armkit.tokenizer import Tokenizer

STATE = "tokenize-state.json"
SAFE_PART = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
MAX_KEY = 200


def safe_key(key: str) -> bool:
    """A key that can name tar members: relative, "/"-separated parts of ASCII letters, digits, "_", "-" and "."
    (a part never starts with "."), at most 200 characters. Not: `../../x`, `/abs/x`, `a//b`, spaces, backslashes,
    control or non-ASCII characters."""
    return 0 < len(key) <= MAX_KEY and all(SAFE_PART.fullmatch(part) for part in key.split("/"))


def reason_category(reason: str) -> str:
    """A skip reason -> the short category meta.json counts it under ("no caption", "shard cut short", ...)."""
    for prefix, category in (("unsafe name", "unsafe name"), ("shard ends early", "shard cut short"),
                             ("shard holds", "shard cut short"), ('"label"', "label outside the classes")):
        if reason.startswith(prefix):
            return category
    if reason.startswith("member") and "over the limit" in reason:
        return "member too large"
    if reason.startswith("member") and reason.endswith("appears twice"):
        return "member repeated"
    return re.split(r"[:;(]", reason, maxsplit=1)[0].strip()[:60] or "unreadable"


class Skips:
    """Skipped image samples of one shard: warns (shard and key, as the reader does) and records them."""

    def __init__(self, records: list[list] | None = None) -> None:
        self.records: list[list] = list(records or [])  # [key, reason, samples lost]

    def __call__(self, shard: str, key: str, reason: str, lost: int = 1) -> None:
        warnings.warn(f"skipping sample {key!r} in {shard}: {reason}", SkippedSampleWarning, stacklevel=2)
        self.records.append([f"{Path(shard).name}:{key}", reason, int(lost)])


def skipped_record(records: list[list]) -> dict[str, Any]:
    """meta.json's "skipped": {"count", "by_reason": {category: samples}, "details": ["shard:key: reason"]}."""
    by_reason: Counter = Counter()
    for _, reason, lost in records:
        by_reason[reason_category(reason)] += lost
    return {"count": sum(lost for *_, lost in records), "by_reason": dict(sorted(by_reason.items())),
            "details": [f"{where}: {reason}" for where, reason, _ in records]}


def image_classes(data: Path) -> list[str] | None:
    """The class names `armkit data` recorded in the image shards' meta.json, if any."""
    try:
        classes = json.loads((data / "meta.json").read_text(encoding="utf-8")).get("classes")
    except (OSError, ValueError, AttributeError):
        return None
    return classes if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else None


class PixelEdit(NamedTuple):
    """An edit made in pixel space: the target is `apply(image)`, so every edit pair has an exact real target."""
    instruction: str
    caption: str  # the target's caption: this prefix + the source's caption
    apply: Callable[[torch.Tensor], torch.Tensor]
    every: int  # one source image in `every` (by position in its shard) gets a pair


PIXEL_EDITS = {"upside-down": PixelEdit("turn it upside down", "upside down: ", lambda x: x.flip(-2), every=4)}


def encode_shard(shard: str, part: Path, tok: Any, *, size: int, batch_size: int, device: str, skips: Skips,
                 classes: list[str] | None, progress: Any, pixel_edit: PixelEdit | None = None) -> tuple[int, int]:
    """Encode one image shard into the code shard `part`; returns (samples written, of which edit pairs). Bad
    samples go to `skips`. With `pixel_edit`, one image in `every` also gives a pair `KEY-edit` (source: its codes,
    target: the codes of the edited pixels, caption: the edit's prefix + its caption) in the same shard."""
    written, edits, pending, seen = 0, 0, [], 0
    with wds.TarWriter(str(part), encoder=False, mtime=0) as writer:
        def flush() -> None:
            nonlocal edits
            batch = collate([s for s, _ in pending])
            codes = tok.encode(batch["image"].to(device)).cpu()  # [B, N]
            chosen = [i for i, (_, pick) in enumerate(pending) if pick]
            targets = dict(zip(chosen, tok.encode(pixel_edit.apply(batch["image"][chosen]).to(device)).cpu())) \
                if chosen else {}
            for i, (s, _) in enumerate(pending):
                writer.write(code_sample(s["key"], codes[i], tok.grid, caption=s["txt"], label=s["cls"],
                                         tags=s["tags"]))
                if i in targets:
                    writer.write(code_sample(f"{s['key']}-edit", targets[i], tok.grid,
                                             caption=pixel_edit.caption + s["txt"], label=s["cls"], tags=s["tags"],
                                             edit={"source": codes[i], "source_grid": tok.grid,
                                                   "instruction": pixel_edit.instruction, "source_key": s["key"]}))
                    edits += 1
            progress.update(len(pending))
            pending.clear()

        for raw in raw_samples([shard], skips, expected_counts([shard])):
            key = str(raw.get("__key__", "?"))
            if not safe_key(key):
                skips(shard, key, "unsafe name: a code shard member name must be relative, of ASCII letters, "
                                  "digits, '_', '-', '.' and '/' (no '..', no leading '/' or '.')")
                continue
            try:
                sample = decode_sample(raw, size)
            except BadSample as e:
                skips(shard, key, str(e))
                continue
            if classes is not None and not -1 <= sample["cls"] < len(classes):
                skips(shard, key, f'"label" {sample["cls"]} is outside the {len(classes)} classes of meta.json')
                continue
            pending.append((sample, pixel_edit is not None and seen % pixel_edit.every == 0))
            seen += 1
            written += 1
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
    return written + edits, edits


def tokenize(tokenizer: Path, data: Path, out: Path, *, splits: list[str], batch_size: int = 32,
             edits: str | None = None, edit_every: int | None = None, device: str = "cpu") -> dict:
    """Encodes `splits` of `data` into `out`; `edit_every` overrides a pixel edit's `every` (one pair per that many
    images). A resumed run must use the same edit rule: shards written with another would mix two data sets."""
    from tqdm.auto import tqdm

    pixel_edit = PIXEL_EDITS.get(edits or "")
    if edit_every is not None:
        if pixel_edit is None or edit_every < 1:
            raise ValueError(f"--edit-every {edit_every} needs --edits {' or '.join(PIXEL_EDITS)} and a value >= 1")
        pixel_edit = pixel_edit._replace(every=edit_every)
    rule = {"edits": edits, "every": pixel_edit.every if pixel_edit else None}

    fingerprint = tokenizer_fingerprint(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE
    done: dict[str, dict] = {}  # code shard name -> {"count", "skipped"} of the shards already written
    if state.is_file():  # a resumed run: the shards already there must come from this tokenizer and data
        before = json.loads(state.read_text())
        check_fingerprint(before["fingerprint"], fingerprint,
                          expected_from=f"the code shards already in {out}", got_from=f"--tokenizer {tokenizer}")
        if Path(before["data"]).resolve() != data.resolve():
            raise ValueError(f"{out} holds codes of {before['data']}, not of --data {data}; use another --out")
        if before.get("edit_rule", rule) != rule:
            raise ValueError(f"{out} holds codes written with the edit rule {before['edit_rule']}, not {rule}; "
                             "use another --out")
        done = before.get("shards") or {}
    record = {"fingerprint": fingerprint, "tokenizer": str(tokenizer), "data": str(data), "shards": done,
              "edit_rule": rule}
    state.write_text(json.dumps(record))
    (out / META).unlink(missing_ok=True)
    tok = Tokenizer.from_pretrained(tokenizer).to(device)
    if tok.quantizer.num_codebooks != 1:
        raise ValueError(f"{tokenizer} has {tok.quantizer.num_codebooks} FSQ codebooks; the AR stage reads one code "
                         "per position (export a tokenizer with num_codebooks: 1)")
    size = tok.encoder.image_size
    if size[0] != size[1]:
        raise ValueError(f"the tokenizer's input is {size}; armkit tokenize reads square shards")
    classes = image_classes(data)
    meta: dict[str, Any] = {"format": FORMAT, "format_version": 1, "tokenizer": {
        "fingerprint": fingerprint, "path": str(tokenizer.resolve()), "codebook_size": tok.codebook_size,
        "levels": list(tok.quantizer.levels), "num_codebooks": tok.quantizer.num_codebooks, "grid": list(tok.grid),
        "image_size": list(tok.image_size)}}
    if classes is not None:
        meta["classes"] = classes
    started, split_meta, all_skips = time.time(), {}, []
    for split in splits:
        shards = [s for s in expand_shards(data, split=split) if Path(s).name.startswith(f"{split}-")]
        if not shards:
            raise FileNotFoundError(f"{data} has no {split}-*.tar shards")
        total = shard_meta_counts(data, split)
        count, listing, skipped, edit_count = 0, [], 0, 0
        with tqdm(total=total, desc=f"tokenize {split}", unit="img") as bar:
            for shard in shards:
                target = out / Path(shard).name
                if target.is_file():  # written whole by an earlier run (the rename is the last step)
                    known = done.get(target.name)
                    if known is None:  # written by a run that kept no record: count it, its skips are unknown
                        is_edit = [s["edit"] is not None for s in CodeReader([str(target)], image_size=1, meta=meta)]
                        known = {"count": len(is_edit), "edits": sum(is_edit) if edits in PIXEL_EDITS else 0,
                                 "skipped": []}
                    n, skips = int(known["count"]), Skips(known["skipped"])
                    n_edits = int(known.get("edits", 0))
                    bar.update(n - n_edits)
                else:
                    part, skips = target.with_suffix(".tar.part"), Skips()
                    n, n_edits = encode_shard(shard, part, tok, size=size[0], batch_size=batch_size,
                                              device=device, skips=skips, classes=classes, progress=bar,
                                              pixel_edit=pixel_edit)
                    part.replace(target)
                    done[target.name] = {"count": n, "edits": n_edits, "skipped": skips.records}
                    state.write_text(json.dumps(record))
                count += n - n_edits
                edit_count += n_edits
                listing.append({"name": target.name, "count": n})
                skipped += sum(lost for *_, lost in skips.records)
                all_skips += skips.records
        split_meta[split] = {"count": count, "skipped": skipped, "shards": listing}
        if edits in PIXEL_EDITS:
            split_meta[split]["edits"] = edit_count
    if edits and edits not in PIXEL_EDITS:
        for split, (name, n) in write_edit_pairs(out, splits, meta=meta).items():
            split_meta[split]["edits"] = n
            split_meta[split]["shards"].append({"name": name, "count": n})
    meta.update({
        "data": str(data.resolve()), "splits": split_meta, "skipped": skipped_record(all_skips), "edits": edits,
        "edit_every": rule["every"],
        "seconds": round(time.time() - started, 1),
        "sample": {"codes": "int32 LE, h*w row-major", "src": "edit source codes", "json": ["grid", "caption",
                                                                                        "label", "tags"]}})
    (out / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return meta


def skin_tone_pairs(captions: dict[str, dict]) -> list[tuple[dict, dict, str]]:
    """(source, target, instruction) for every "NAME: TONE skin tone" whose plain "NAME" exists."""
    pairs = []
    for caption, target in captions.items():
        name, _, tone = caption.partition(": ")
        if tone.endswith("skin tone") and "," not in tone and name in captions:
            pairs.append((captions[name], target, f"make it {tone}"))
    return pairs


def write_edit_pairs(out: Path, splits: list[str], *, meta: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """{split: (shard name, pairs written)}: edit pairs in the target's split (the source may come from any split);
    `meta` is the meta.json being written (the codes are checked against it)."""
    by_caption: dict[str, dict] = {}
    for split in splits:
        for shard in sorted(out.glob(f"{split}-0*.tar")):
            for s in CodeReader([str(shard)], image_size=1, meta=meta):
                by_caption.setdefault(s["caption"], {**s, "split": split})
    written = {}
    for split in splits:
        pairs = [p for p in skin_tone_pairs(by_caption) if p[1]["split"] == split]
        target = out / f"{split}-edit-000000.tar"
        part = target.with_suffix(".tar.part")
        with wds.TarWriter(str(part), encoder=False, mtime=0) as writer:
            for source, tgt, instruction in pairs:
                writer.write(code_sample(f"edit-{tgt['key']}", tgt["codes"], tgt["grid"], caption=tgt["caption"],
                                         label=tgt["label"], tags="", edit={
                                             "source": source["codes"], "source_grid": source["grid"],
                                             "instruction": instruction, "source_key": source["key"]}))
        part.replace(target)
        written[split] = (target.name, len(pairs))
    return written


def shard_meta_counts(data: Path, split: str) -> int | None:
    """The image count `armkit data` recorded for a split (for the progress bar), if any."""
    try:
        return int(json.loads((data / "meta.json").read_text())["splits"][split]["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
