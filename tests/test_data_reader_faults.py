"""The shard reader under hostile shards: bounded memory, every lost sample counted and named, no silent captions."""

from __future__ import annotations

import io
import json
import tarfile
import tracemalloc
import warnings
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from armkit.recipes.data.reader import ShardReader, SkippedSampleWarning, TrainStream


def sample(i: int, *, caption: bool = True) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (i, 2 * i, 3 * i)).save(buf, format="PNG")
    s = {"__key__": f"s{i:03d}", "png": buf.getvalue(), "cls": b"0"}
    if caption:
        s["txt"] = f"caption {i}".encode()
    return s


def write_shard(path: Path, samples: list[dict], *, meta: bool) -> None:
    with wds.TarWriter(str(path), encoder=False) as tar:
        for s in samples:
            tar.write(s)
    if meta:
        (path.parent / "meta.json").write_text(json.dumps(
            {"splits": {"train": {"count": len(samples), "shards": [{"name": path.name, "count": len(samples)}]}}}))


def read(folder: Path, **kwargs) -> tuple[list[str], int, list[str]]:
    reader = ShardReader(str(folder), image_size=6, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [s["key"] for s in reader]
    return keys, reader.skipped, [str(w.message) for w in caught if issubclass(w.category, SkippedSampleWarning)]


class Zeros(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        b[:] = bytes(len(b))
        return len(b)


def test_a_huge_gzipped_member_is_skipped_without_reading_it(tmp_path):
    big = 200 << 20  # 200 MiB of zeros: about 0.2 MiB once gzipped
    shard = tmp_path / "train-000000.tar"
    with tarfile.open(shard, "w:gz", compresslevel=1) as tar:
        for i in (0, 1):
            for ext, data in (("png", sample(i)["png"]), ("txt", b"fine")):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("bomb.png")
        info.size = big
        tar.addfile(info, io.BufferedReader(Zeros()))
        info = tarfile.TarInfo("s002.png")
        info.size = len(sample(2)["png"])
        tar.addfile(info, io.BytesIO(sample(2)["png"]))
        info = tarfile.TarInfo("s002.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"last"))
    assert shard.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        keys, skipped, messages = read(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert keys == ["s000", "s001", "s002"] and skipped == 1
    assert peak < 32 << 20, f"peak Python allocation {peak / 2**20:.0f} MiB"
    assert len(messages) == 1 and "'bomb'" in messages[0] and "train-000000.tar" in messages[0]
    assert "over the limit" in messages[0]


@pytest.mark.parametrize("with_meta", [True, False])
def test_a_truncated_shard_counts_what_it_lost(tmp_path, with_meta):
    shard = tmp_path / "train-000000.tar"
    write_shard(shard, [sample(i) for i in range(12)], meta=with_meta)
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * 0.55)])
    keys, skipped, messages = read(tmp_path)
    assert 0 < len(keys) < 12 and keys == [f"s{i:03d}" for i in range(len(keys))]
    if with_meta:
        assert len(keys) + skipped == 12  # every sample is either read or counted
        assert f"{12 - len(keys)} of its 12 samples lost" in messages[-1]
    else:
        assert skipped == 1 and "how many follow is unknown" in messages[-1]
    assert "train-000000.tar" in messages[-1] and f"s{len(keys):03d}" in messages[-1]  # names the shard and key


def test_a_shard_shorter_than_its_meta_counts_the_difference(tmp_path):
    shard = tmp_path / "train-000000.tar"
    write_shard(shard, [sample(i) for i in range(12)], meta=True)
    write_shard(shard, [sample(i) for i in range(7)], meta=False)  # replaced by a shorter, well-formed tar
    keys, skipped, messages = read(tmp_path)
    assert len(keys) == 7 and skipped == 5 and "meta.json says 12" in messages[-1]


def test_a_sample_without_a_caption_is_skipped_and_counted(tmp_path):
    samples = [sample(i, caption=i not in (3, 8)) for i in range(10)]
    samples[5]["txt"] = b"   \n"  # blank
    write_shard(tmp_path / "train-000000.tar", samples, meta=True)
    keys, skipped, messages = read(tmp_path)
    assert skipped == 3 and sorted(keys) == [f"s{i:03d}" for i in range(10) if i not in (3, 5, 8)]
    assert all("no caption" in m for m in messages) and {"'s003'", "'s005'", "'s008'"} == {
        m.split()[2] for m in messages}
    keys, skipped, _ = read(tmp_path, require_caption=False)  # reconstruction-only data, asked for explicitly
    assert skipped == 0 and len(keys) == 10
    stream = TrainStream(str(tmp_path), image_size=6, batch_size=7, shuffle_buffer=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(stream))
    assert batch["skipped"] == 3 and all(batch["txt"])
