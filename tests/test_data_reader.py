"""The shard reader: every image mode to RGB, resize/crop, bad samples skipped and counted, node x worker splits."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from armkit.recipes.data.module import ResumableLoader, ShardLoader
from armkit.recipes.data.reader import (
    ShardReader,
    SkippedSampleWarning,
    TrainStream,
    decode_sample,
    epoch_shards,
    image_tensor,
    load_image,
)


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def pixel(t: torch.Tensor, x: int = 0, y: int = 0) -> list[float]:
    return t[:, y, x].tolist()


# ------------------------------------------------------------------------------------------------------- modes

def two_pixels(mode: str, a, b) -> Image.Image:
    img = Image.new(mode, (2, 1))
    img.putpixel((0, 0), a)
    img.putpixel((1, 0), b)
    return img


W = 1.0  # white


@pytest.mark.parametrize("mode, a, b, want_a, want_b", [
    ("L", 77, 255, [77 / 255] * 3, [W] * 3),
    ("LA", (200, 0), (200, 255), [W] * 3, [200 / 255] * 3),
    ("RGBA", (255, 0, 0, 0), (255, 0, 0, 255), [W] * 3, [1.0, 0.0, 0.0]),
    ("CMYK", (0, 255, 255, 0), (0, 0, 0, 255), [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
    ("I;16", 65535, 257 * 100, [W] * 3, [100 / 255] * 3),
    ("I", 0, 257 * 200, [0.0] * 3, [200 / 255] * 3),
    ("F", 0.25, 1.0, [round(0.25 * 255) / 255] * 3, [W] * 3),
])
def test_every_mode_decodes_to_rgb_in_unit_range(mode, a, b, want_a, want_b):
    t = image_tensor(two_pixels(mode, a, b).resize((2, 2), Image.Resampling.NEAREST), 2)
    assert t.shape == (3, 2, 2) and t.dtype == torch.float32
    assert 0.0 <= t.min() and t.max() <= 1.0
    assert pixel(t, 0) == pytest.approx(want_a, abs=1e-6)
    assert pixel(t, 1) == pytest.approx(want_b, abs=1e-6)


def test_semi_transparent_red_is_composited_on_white():
    t = image_tensor(Image.new("RGBA", (2, 2), (255, 0, 0, 64)), 2)
    g = 255 * (1 - 64 / 255)  # alpha blend over white: c * a + 255 * (1 - a)
    assert pixel(t) == pytest.approx([1.0, g / 255, g / 255], abs=1.5 / 255)


def test_palette_with_transparency_and_round_trips_through_files():
    p = Image.new("P", (2, 2), 1)
    p.putpalette([0, 0, 0, 10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 9))
    p.putpixel((1, 0), 2)
    p.info["transparency"] = 2
    t = load_image(png(p), 2)  # through a real PNG file
    assert pixel(t, 0) == pytest.approx([10 / 255, 20 / 255, 30 / 255], abs=1e-6)
    assert pixel(t, 1) == pytest.approx([W] * 3, abs=1e-6)
    for mode, value, want in [("I;16", 65535, 1.0), ("CMYK", (0, 0, 0, 0), 1.0), ("F", 0.5, 128 / 255),
                              ("LA", (0, 0), 1.0)]:
        img = Image.new(mode, (3, 3), value)
        t = load_image(png(img, "TIFF"), 3)
        assert Image.open(io.BytesIO(png(img, "TIFF"))).mode == mode
        assert t.shape == (3, 3, 3) and t.sub(want).abs().max() < 1e-6, mode


def test_resize_shorter_side_then_centre_crop():
    img = Image.new("RGB", (30, 10), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    img.paste((0, 255, 0), (10, 0, 20, 10))
    t = image_tensor(img, 10)  # no resize needed: the crop keeps the green middle third
    assert t.shape == (3, 10, 10) and torch.equal(t, torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 10, 10))
    t = image_tensor(img, 4)  # shorter side 10 -> 4, width 30 -> 12, centre crop 4 of 12: inside the green part
    assert t.shape == (3, 4, 4) and t[1].min() > 0.9 and t[0].max() < 0.1
    big = image_tensor(Image.new("L", (3, 5), 128), 8)  # upscaling works too
    assert big.shape == (3, 8, 8) and big.sub(128 / 255).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------- corrupt samples

def good(i: int) -> dict:
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return {"__key__": f"s{i:03d}", "png": png(img), "txt": f"caption {i}".encode(), "cls": str(i % 3).encode(),
            "json": json.dumps({"source": "test", "id": str(i), "tags": f"tag{i}"}).encode()}


def corrupt(i: int, kind: str) -> dict:
    s = good(i)
    if kind == "truncated":
        s["png"] = s["png"][: len(s["png"]) // 2]
    elif kind == "empty":
        s["png"] = b""
    elif kind == "utf8":
        s["txt"] = b"caption \xff\xfe"
    elif kind == "cls":
        s["cls"] = b"three"
    elif kind == "json":
        s["json"] = b"{not json"
    elif kind == "no-image":
        s["xyz"] = s.pop("png")  # an image under an unknown extension
    return s


KINDS = ["truncated", "empty", "utf8", "cls", "json", "no-image"]


@pytest.fixture(scope="module")
def corrupt_shards(tmp_path_factory):
    """6 shards, 60 samples, 6 of them corrupt (one of each kind)."""
    out = tmp_path_factory.mktemp("corrupt")
    bad = {7: "truncated", 15: "empty", 22: "utf8", 38: "cls", 45: "json", 59: "no-image"}
    for shard in range(6):
        with wds.TarWriter(str(out / f"train-{shard:06d}.tar"), encoder=False) as tar:
            for i in range(shard * 10, shard * 10 + 10):
                tar.write(corrupt(i, bad[i]) if i in bad else good(i))
    return out, sorted(f"s{i:03d}" for i in range(60) if i not in bad)


def test_decode_sample_reads_all_fields():
    s = decode_sample(good(4), 6)
    assert s["txt"] == "caption 4" and s["tags"] == "tag4" and s["cls"] == 1 and s["key"] == "s004"
    raw = good(5)
    del raw["json"], raw["cls"]
    s = decode_sample(raw, 6)
    assert s["tags"] == "caption 5" and s["cls"] == -1  # tags fall back to the caption, no label -> -1


def test_corrupt_samples_are_skipped_and_counted_exactly(corrupt_shards):
    folder, good_keys = corrupt_shards
    reader = ShardReader(str(folder), image_size=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [s["key"] for s in reader]
    assert sorted(keys) == good_keys and reader.skipped == 6
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedSampleWarning)]
    assert len(messages) == 6 and any("'s022'" in m and "train-000002.tar" in m and "UTF-8" in m for m in messages)


def test_skip_count_reaches_the_main_process_with_workers(corrupt_shards):
    folder, good_keys = corrupt_shards
    loader = ShardLoader(ShardReader(str(folder), image_size=6, batch_size=4), num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == good_keys
    assert batches[-1]["skipped"] == loader.skipped == 6
    assert all(b["image"].shape[1:] == (3, 6, 6) and b["cls"].dtype == torch.long for b in batches)


# ------------------------------------------------------------------------------------------------------ splits

@pytest.fixture(scope="module")
def clean_shards(tmp_path_factory):
    """8 shards x 6 samples, all good."""
    out = tmp_path_factory.mktemp("clean")
    for shard in range(8):
        with wds.TarWriter(str(out / f"train-{shard:06d}.tar"), encoder=False) as tar:
            for i in range(shard * 6, shard * 6 + 6):
                tar.write(good(i))
    return out, sorted(f"s{i:03d}" for i in range(48))


def test_reader_split_over_2_ranks_x_2_workers_partitions_the_set(clean_shards):
    folder, all_keys = clean_shards
    seen = []
    for rank in range(2):
        loader = ShardLoader(ShardReader(str(folder), image_size=6, batch_size=5, rank=rank, world_size=2),
                             num_workers=2)
        keys = [k for b in loader for k in b["key"]]
        assert abs(len(keys) - 24) <= 1
        seen += keys
    assert sorted(seen) == all_keys  # union is everything, nothing twice


def test_reader_limit_counts_over_all_ranks(clean_shards):
    folder, all_keys = clean_shards
    got = [s["key"] for r in range(2) for s in ShardReader(str(folder), image_size=6, limit=9, rank=r, world_size=2)]
    assert sorted(got) == all_keys[:9]


def test_train_epoch_shards_partition_the_shards():
    shards = [f"s{i}" for i in range(11)]
    for epoch in range(3):
        parts = [epoch_shards(shards, seed=5, epoch=epoch, slot=s, slots=4) for s in range(4)]
        assert sorted(x for p in parts for x in p) == sorted(shards)
    assert epoch_shards(shards, seed=5, epoch=0, slot=0, slots=4) != epoch_shards(shards, seed=5, epoch=1, slot=0,
                                                                                    slots=4)


def test_train_stream_epoch_over_2_ranks_x_2_workers_sees_every_sample_once(clean_shards):
    folder, all_keys = clean_shards
    seen = []
    for rank in range(2):
        stream = TrainStream(str(folder), image_size=6, batch_size=1, seed=3, shuffle_buffer=4, rank=rank,
                             world_size=2)
        past_epoch0 = set()
        for batch in ResumableLoader(stream, num_workers=2):
            info = batch["stream"]  # batch_size 1: the position after this very sample
            if info["epoch"] == 0:
                seen += batch["key"]
            else:
                past_epoch0.add(info["worker"])
                if len(past_epoch0) == 2:
                    break
    assert sorted(seen) == all_keys


def test_too_few_shards_for_ranks_x_workers_is_a_clear_error(clean_shards):
    folder, _ = clean_shards
    stream = TrainStream(str(folder), image_size=6, batch_size=2, rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"8 training shards cannot be split over 9 readers"):
        ResumableLoader(stream, num_workers=3)


def test_missing_shards_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ShardReader(str(tmp_path / "nowhere" / "x-{000..003}.tar"), image_size=4)
    with pytest.raises(FileNotFoundError, match="contains no .tar"):
        ShardReader(str(tmp_path), image_size=4)
