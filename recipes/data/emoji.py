"""The demo's default dataset: Microsoft's Fluent 3D emoji (npm @lobehub/fluent-emoji-3d 1.1.0, MIT).

3,391 RGBA 256x256 WebP files named by code points (1f600.webp, 0023-fe0f-20e3.webp, flag tag sequences with "_").
Captions are emoji names: unicodedata's name for a single code point, else the name in `emoji.json` of npm
emoji-datasource-google 16.0.0 (matched on code points, ignoring FE0F and the E007F cancel tag), with CLDR-style
skin tones ("father christmas: medium skin tone"). Label: the emoji.json category; tags: short_names + subcategory.
Several files can name one emoji (0023-fe0f-20e3 and 23-fe0f-20e3): they share a `group`, so one split holds both.
"""

from __future__ import annotations

import json
import re
import tarfile
import unicodedata
from collections import Counter
from functools import partial
from pathlib import Path

from armkit.recipes.data.fetch import npm_tarball
from armkit.recipes.data.images import open_image
from armkit.recipes.data.sources import Sample, Skip, SourceData, clean_key

IMAGES = ("@lobehub/fluent-emoji-3d", "1.1.0")
METADATA = ("emoji-datasource-google", "16.0.0")
IGNORED = {0xFE0F, 0xE007F}  # variation selector 16 and the tag sequence's cancel tag
SKIN_TONES = {0x1F3FB: "light skin tone", 0x1F3FC: "medium-light skin tone", 0x1F3FD: "medium skin tone",
              0x1F3FE: "medium-dark skin tone", 0x1F3FF: "dark skin tone"}


def code_points(text: str) -> tuple[int, ...]:
    """"1F469-200D-1F4BB" or "1f3f4-e0067_e0062" -> code points without FE0F / E007F."""
    return tuple(c for c in (int(p, 16) for p in re.split(r"[-_]", text) if p) if c not in IGNORED)


def metadata_index(entries: list[dict]) -> dict[tuple[int, ...], dict]:
    """Code points -> {"entry": emoji.json entry, "tones": skin tone names} for every emoji and skin variation."""
    index: dict[tuple[int, ...], dict] = {}
    for e in entries:
        for unified in (e["unified"], e.get("non_qualified")):
            if unified:
                index.setdefault(code_points(unified), {"entry": e, "tones": []})
        for variation in (e.get("skin_variations") or {}).values():
            cps = code_points(variation["unified"])
            tones = list(dict.fromkeys(SKIN_TONES[c] for c in cps if c in SKIN_TONES))
            index.setdefault(cps, {"entry": e, "tones": tones})
    return index


def describe(cps: tuple[int, ...], index: dict) -> tuple[str, dict | None] | None:
    """(caption, matched emoji.json entry or None) for an emoji's code points; None if it has no name at all."""
    match = index.get(cps)
    if len(cps) == 1:
        try:
            return unicodedata.name(chr(cps[0])).lower(), (match or {}).get("entry")
        except ValueError:
            pass
    if match is None:
        return None
    name = match["entry"]["name"].lower()
    return (f"{name}: {', '.join(match['tones'])}" if match["tones"] else name), match["entry"]


def tags_of(entry: dict | None, caption: str) -> str:
    """short_names ("_" and "-" as spaces) + the subcategory's words, e.g. "grinning, face, smiling"."""
    if entry is None:
        return ", ".join(dict.fromkeys(caption.replace(":", " ").replace(",", " ").split()))
    words = [s.replace("_", " ").replace("-", " ") for s in entry.get("short_names") or []]
    words += (entry.get("subcategory") or "").split("-")
    return ", ".join(dict.fromkeys(w for w in words if w))


def load(*, cache: str | Path | None = None, limit: int | None = None) -> SourceData:
    images_tgz = npm_tarball(*IMAGES, cache=cache)
    meta_tgz = npm_tarball(*METADATA, cache=cache)
    with tarfile.open(meta_tgz) as tar:
        entries = json.load(tar.extractfile("package/emoji.json"))
    with tarfile.open(images_tgz) as tar:
        files = {Path(m.name).stem: tar.extractfile(m).read() for m in tar
                 if m.isfile() and m.name.startswith("package/assets/") and m.name.endswith(".webp")}
    index = metadata_index(entries)
    first: dict[str, int] = {}  # category -> its first emoji's sort_order: the categories in emoji.json's order
    for e in entries:
        first[e["category"]] = min(first.get(e["category"], e["sort_order"]), e["sort_order"])
    categories = sorted(first, key=first.get)

    rows, skipped = [], []
    for stem in sorted(files):
        cps = code_points(stem)
        found = describe(cps, index)
        if found is None:
            skipped.append(stem)
            continue
        caption, entry = found
        rows.append((stem, cps, caption, entry))
    used = Counter(e["category"] for *_, e in rows if e is not None)
    classes = [c for c in categories if used[c]]  # e.g. "Component" (skin tone swatches) has no image
    rows = rows[:limit]  # after the class list, so --limit keeps the full run's label numbering
    samples = [Sample(key=clean_key(stem), load=partial(open_image, files[stem]), caption=caption,
                      label=classes.index(entry["category"]) if entry is not None else -1,
                      tags=tags_of(entry, caption), id=stem, group="-".join(f"{c:x}" for c in cps))
               for stem, cps, caption, entry in rows]
    return SourceData(
        name="emoji", licence="MIT (Microsoft Fluent Emoji, via npm @lobehub/fluent-emoji-3d); metadata MIT "
        "(emoji-datasource-google)", classes=classes, train=samples, default_size=128,
        skipped=[Skip(stem, "no unicode name and no emoji.json match") for stem in skipped],
        provenance={"packages": [{"registry": "npm", "name": n, "version": v, "file": p.name}
                                 for (n, v), p in ((IMAGES, images_tgz), (METADATA, meta_tgz))],
                    "unmatched_kept": sum(1 for *_, e in rows if e is None),
                    "categories_without_images": [c for c in categories if not used[c]]})
