"""A user's own folder of images with captions: a sidecar `NAME.txt` next to each image, or an index file.

`--index FILE`: CSV (header row) or JSONL with "path" (relative to the folder, or absolute), "caption", and
optionally "label" (an integer, or a class name: names are numbered in sorted order) and "tags". Without an index,
every image under the folder (recursively) with a sidecar `.txt` is used; `.tags` sidecars are optional.
Images without a caption (or with one that is not UTF-8), index rows naming missing files, and images the writer
cannot decode or that are past the size limits (`recipes/data/images.py`) are skipped, named in the log and counted
by reason in meta.json. Paths are kept relative to the folder, so `--src` may be relative.
"""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

from armkit.recipes.data.images import open_image
from armkit.recipes.data.reader import IMAGE_EXTS
from armkit.recipes.data.sources import Sample, Skip, SourceData, clean_key


def read_index(path: Path) -> list[dict]:
    """Rows of a CSV (with header) or JSONL index; each must have "path" and "caption"."""
    if not path.is_file():
        raise FileNotFoundError(f"index file {path} does not exist")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e})") from None
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("path") or row.get("caption") is None:
            raise ValueError(f"{path}: row {n} needs 'path' and 'caption' (got {row})")
    return rows


def load(*, src: str | Path, index: str | Path | None = None, limit: int | None = None) -> SourceData:
    src = Path(src).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"--src folder {src} does not exist")
    skipped: list[Skip] = []
    if index is not None:
        rows = read_index(Path(index).expanduser())
    else:
        images = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS)
        rows = []
        for p in images:
            rel = str(p.relative_to(src))
            txt, tags = p.with_suffix(".txt"), p.with_suffix(".tags")
            if not txt.is_file():
                skipped.append(Skip(rel, "no caption", f"no {txt.name} beside it"))
                continue
            texts = {}
            for name, side in (("caption", txt), ("tags", tags)):
                try:
                    texts[name] = side.read_text(encoding="utf-8").strip() if side.is_file() else ""
                except UnicodeDecodeError as e:
                    skipped.append(Skip(rel, "caption not UTF-8", f"{side.name}: {e}"))
                    break
            else:
                rows.append({"path": rel, **texts})
    rows = rows[:limit]

    labels = [str(r.get("label", "")).strip() for r in rows]
    named = sorted({lab for lab in labels if lab and not lab.lstrip("-").isdigit()})
    if named and any(lab.lstrip("-").isdigit() for lab in labels):
        raise ValueError("labels mix integers and class names; use one or the other")
    classes = named or [str(i) for i in range(max((int(lab) for lab in labels if lab), default=-1) + 1)]

    samples, keys = [], set()
    for row, lab in zip(rows, labels):
        path = Path(row["path"]) if Path(row["path"]).is_absolute() else src / row["path"]
        if not path.is_file():
            skipped.append(Skip(str(row["path"]), "missing file", f"{path} does not exist"))
            continue
        if not str(row["caption"]).strip():
            skipped.append(Skip(str(row["path"]), "no caption", "the caption is empty"))
            continue
        rel = str(path.relative_to(src)) if path.is_relative_to(src) else path.name
        key = base = clean_key(str(Path(rel).with_suffix("")))
        n = 1
        while key in keys:  # "a/b.png" and "a_b.png" would clash
            key, n = f"{base}_{n}", n + 1
        keys.add(key)
        label = classes.index(lab) if named else (int(lab) if lab else -1)
        samples.append(Sample(key=key, load=partial(open_image, path), caption=str(row["caption"]).strip(),
                              label=label, tags=str(row.get("tags") or "").strip(), id=rel))
    if not samples:
        raise ValueError(f"no usable image with a caption in {src} (skipped {len(skipped)})")
    return SourceData(name="folder", licence="as given by the user", classes=classes, train=samples, skipped=skipped,
                      provenance={"src": str(src), "index": str(index) if index else None})
