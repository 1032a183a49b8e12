"""Raw samples from WebDataset tar shards, with member sizes bounded and every lost sample counted.

webdataset's `tarfile_samples` reads each member whole (a 1 MB gzipped tar can hold a 1 GiB member) and, when a
shard is cut short, reports one error for however many samples were lost. Here:
- a member larger than `max_member_bytes` is never read: its sample is skipped, named and counted;
- a shard that ends early (truncated, even exactly between two members, which Python's tarfile reads as a normal
  end; bad header; bad gzip) drops the sample it was reading, and the loss is
  counted as the shard's sample count in the `meta.json` beside it (written by `armkit data`) minus what was read,
  or as one sample (with a note that the rest is unknown) when there is no meta.json;
- a shard that ends cleanly but holds fewer samples than its meta.json says is counted the same way.

Samples are grouped as webdataset groups them (`base_plus_ext`: the key is the name up to the first dot of the
file name), so the output is the dict webdataset would give: extension -> bytes, plus "__key__" and "__url__".
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from webdataset.gopen import gopen
from webdataset.tariterators import base_plus_ext

MAX_MEMBER_BYTES = 64 << 20  # one image or caption file; the demo's are a few kB

Skip = Callable[[str, str, str, int], None]  # (shard, key, reason, samples lost)


def expected_counts(shards: list[str]) -> dict[str, int]:
    """{shard path: sample count} from the meta.json beside each local shard (`armkit data` writes it); shards without
    one, or with an unreadable one, are simply absent."""
    counts: dict[str, int] = {}
    for folder in sorted({str(Path(s).parent) for s in shards if "://" not in s and not s.startswith("pipe:")}):
        try:
            meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
            per_name = {sh["name"]: int(sh["count"]) for split in meta["splits"].values() for sh in split["shards"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        counts.update({s: per_name[Path(s).name] for s in shards
                       if str(Path(s).parent) == folder and Path(s).name in per_name})
    return counts


def shard_samples(url: str, *, skip: Skip, expected: int | None = None,
                  max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[dict[str, Any]]:
    """The raw samples of one shard, in order; losses are reported through `skip(shard, key, reason, count)`."""
    done, counted = 0, 0  # samples yielded; samples already reported lost in this shard
    current: dict[str, Any] | None = None
    refused = None  # the key whose member was too large: its other members are dropped too
    try:
        with gopen(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = _split(info.name)
                if key is None:
                    continue
                if current is not None and key != current["__key__"]:
                    yield current
                    done, current = done + 1, None
                if key == refused:
                    continue
                if info.size > max_member_bytes or (current is not None and ext in current):
                    why = (f"member {info.name} is {info.size:,} bytes, over the limit of {max_member_bytes:,}"
                           if info.size > max_member_bytes else f"member {info.name} appears twice")
                    skip(url, key, why, 1)
                    counted, current, refused = counted + 1, None, key
                    continue
                if current is None:
                    current = {"__key__": key, "__url__": url}
                current[ext] = tar.extractfile(info).read()
            if getattr(tar.fileobj, "pos", tar.offset + 512) - tar.offset < 512:  # no end-of-archive block
                raise tarfile.ReadError("the tar ends without its end-of-archive block (truncated at a header)")
    except Exception as e:  # noqa: BLE001 -- truncated tar, bad header, bad gzip, unreadable file: the shard ends
        at = f"sample {current['__key__']!r}" if current is not None else "a sample header"
        lost = max(1, expected - done - counted) if expected is not None else 1
        rest = (f"{lost} of its {expected} samples lost" if expected is not None
                else "at least 1 sample lost; how many follow is unknown (no meta.json beside the shard)")
        skip(url, current["__key__"] if current is not None else "?",
             f"shard ends early at {at}: {type(e).__name__}: {e}; {rest}", lost)
        return
    if current is not None:
        yield current
        done += 1
    if expected is not None and done + counted < expected:
        skip(url, "?", f"shard holds {done + counted} samples, its meta.json says {expected}; "
                       f"{expected - done - counted} lost", expected - done - counted)


def _split(name: str) -> tuple[str | None, str]:
    """A member name -> (key, lower-case extension) as webdataset groups them; (None, "") for names it ignores."""
    found = base_plus_ext(name)
    if found is None or found[0] is None or Path(name).name.startswith("__"):
        return None, ""
    return found[0], found[1].lower()


def raw_samples(shards: list[str], skip: Skip, expected: dict[str, int] | None = None,
                max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[dict[str, Any]]:
    """The raw samples of every shard, in order (see `shard_samples`)."""
    for url in shards:
        yield from shard_samples(url, skip=skip, expected=(expected or {}).get(url),
                                 max_member_bytes=max_member_bytes)
