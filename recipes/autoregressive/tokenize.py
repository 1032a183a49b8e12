"""The work behind `armkit tokenize`: image shards -> code shards, resumable, with the tokenizer's fingerprint in
meta.json.

The command's arguments and its full description are in recipes/commands/tokenize.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import webdataset as wds

from armkit.recipes.autoregressive.codes import (
    FORMAT,
    META,
    CodeReader,
    check_fingerprint,
    code_sample,
    tokenizer_fingerprint,
)
from armkit.recipes.data.reader import ShardReader, expand_shards

STATE = "tokenize-state.json"






def tokenize(tokenizer: Path, data: Path, out: Path, *, splits: list[str], batch_size: int = 32,
             edits: str | None = None, device: str = "cpu") -> dict:
    from tqdm.auto import tqdm

    from armkit.tokenizer import Tokenizer

    fingerprint = tokenizer_fingerprint(tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE
    if state.is_file():  # a resumed run: the shards already there must come from this tokenizer and data
        before = json.loads(state.read_text())
        check_fingerprint(before["fingerprint"], fingerprint,
                          expected_from=f"the code shards already in {out}", got_from=f"--tokenizer {tokenizer}")
        if Path(before["data"]).resolve() != data.resolve():
            raise ValueError(f"{out} holds codes of {before['data']}, not of --data {data}; use another --out")
    state.write_text(json.dumps({"fingerprint": fingerprint, "tokenizer": str(tokenizer), "data": str(data)}))
    (out / META).unlink(missing_ok=True)
    tok = Tokenizer.from_pretrained(tokenizer).to(device)
    if tok.quantizer.num_codebooks != 1:
        raise ValueError(f"{tokenizer} has {tok.quantizer.num_codebooks} FSQ codebooks; the AR stage reads one code "
                         "per position (export a tokenizer with num_codebooks: 1)")
    size = tok.encoder.image_size
    if size[0] != size[1]:
        raise ValueError(f"the tokenizer's input is {size}; armkit tokenize reads square shards")
    started, split_meta = time.time(), {}
    for split in splits:
        shards = [s for s in expand_shards(data, split=split) if Path(s).name.startswith(f"{split}-")]
        if not shards:
            raise FileNotFoundError(f"{data} has no {split}-*.tar shards")
        total = shard_meta_counts(data, split)
        count = 0
        with tqdm(total=total, desc=f"tokenize {split}", unit="img") as bar:
            for shard in shards:
                target = out / Path(shard).name
                if target.is_file():  # written whole by an earlier run (the rename is the last step)
                    n = sum(1 for _ in CodeReader([str(target)], image_size=1))
                    count += n
                    bar.update(n)
                    continue
                part = target.with_suffix(".tar.part")
                with wds.TarWriter(str(part), encoder=False, mtime=0) as writer:
                    for batch in ShardReader([shard], image_size=size[0], batch_size=batch_size):
                        codes = tok.encode(batch["image"].to(device)).cpu()  # [B, N]
                        for i, key in enumerate(batch["key"]):
                            writer.write(code_sample(key, codes[i], tok.grid, caption=batch["txt"][i],
                                                     label=int(batch["cls"][i]), tags=batch["tags"][i]))
                        count += len(batch["key"])
                        bar.update(len(batch["key"]))
                part.replace(target)
        split_meta[split] = {"count": count}
    if edits:
        for split, n in write_edit_pairs(out, splits).items():
            split_meta[split]["edits"] = n
    meta = {"format": FORMAT, "format_version": 1, "tokenizer": {
        "fingerprint": fingerprint, "path": str(tokenizer.resolve()), "codebook_size": tok.codebook_size,
        "levels": list(tok.quantizer.levels), "num_codebooks": tok.quantizer.num_codebooks, "grid": list(tok.grid),
        "image_size": list(tok.image_size)},
        "data": str(data.resolve()), "splits": split_meta, "edits": edits, "seconds": round(time.time() - started, 1),
        "sample": {"codes": "int32 LE, h*w row-major", "src": "edit source codes", "json": ["grid", "caption",
                                                                                        "label", "tags"]}}
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


def write_edit_pairs(out: Path, splits: list[str]) -> dict[str, int]:
    """{split: pairs written}: edit pairs in the target's split (the source may come from any split)."""
    by_caption: dict[str, dict] = {}
    for split in splits:
        for shard in sorted(out.glob(f"{split}-0*.tar")):
            for s in CodeReader([str(shard)], image_size=1):
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
        written[split] = len(pairs)
    return written



def shard_meta_counts(data: Path, split: str) -> int | None:
    """The image count `armkit data` recorded for a split (for the progress bar), if any."""
    try:
        return int(json.loads((data / "meta.json").read_text())["splits"][split]["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
