"""`armkit data`: folder / emoji / fashion-mnist -> shards + meta.json -> the reader, all offline (packages faked)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from armkit.recipes.commands.cli import main
from armkit.recipes.data import fashion_mnist
from armkit.recipes.data.emoji import code_points
from armkit.recipes.data.fetch import FetchError, apt_deb, npm_tarball
from armkit.recipes.data.reader import ShardReader


def read_all(folder: Path, split: str, size: int) -> dict[str, dict]:
    return {s["key"]: s for s in ShardReader(str(folder), image_size=size, split=split)}


def check_meta_matches_shards(out: Path) -> dict:
    meta = json.loads((out / "meta.json").read_text())
    for split, info in meta["splits"].items():
        assert [s["name"] for s in info["shards"]] == sorted(p.name for p in out.glob(f"{split}-*.tar"))
        for shard in info["shards"]:
            with tarfile.open(out / shard["name"]) as tar:
                assert len({Path(n).stem for n in tar.getnames()}) == shard["count"]
        assert sum(s["count"] for s in info["shards"]) == info["count"] == sum(info["per_class"].values())
    return meta


# ------------------------------------------------------------------------------------------------------ folder

def test_folder_to_shards_to_reader_keeps_captions_and_labels(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    want = {}
    for i in range(10):
        sub = src / ("cats" if i % 2 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        colour = (25 * i, 255 - 25 * i, 7)
        Image.new("RGB", (12, 8), colour).save(sub / f"img {i}.png")  # a space: keys must be cleaned
        (sub / f"img {i}.txt").write_text(f"a picture number {i} ✓\n", encoding="utf-8")
        want[f"{sub.name}/img_{i}"] = (f"a picture number {i} ✓", colour)
    Image.new("RGB", (8, 8)).save(src / "no_caption.png")  # skipped and counted
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--val-fraction", "0.3",
                 "--shard-size", "3", "--seed", "1"]) == 0
    meta = check_meta_matches_shards(out)
    assert meta["skipped"]["count"] == 1 and meta["splits"]["val"]["count"] == 3
    assert meta["command"].startswith("armkit data folder --out ") and "--seed 1" in meta["command"]
    got = {**read_all(out, "train", 8), **read_all(out, "val", 8)}
    assert sorted(got) == sorted(k.replace("/", "_") for k in want)
    for key, (caption, colour) in want.items():
        s = got[key.replace("/", "_")]
        assert s["txt"] == caption and s["tags"] == caption and s["cls"] == -1
        assert s["image"][:, 4, 4].mul(255).round().tolist() == list(colour)


def test_folder_index_with_named_labels(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    rows = []
    for i, name in enumerate(["zebra", "ant", "zebra", "bee", "ant", "bee"]):
        Image.new("L", (5, 5), 40 * i).save(src / f"{i}.png")
        rows.append({"path": f"{i}.png", "caption": f"photo {i}", "label": name, "tags": f"{name}, animal"})
    index = tmp_path / "index.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "folder", "--src", str(src), "--index", str(index), "--out", str(out),
                 "--val-fraction", "0", "--size", "4"]) == 0
    meta = check_meta_matches_shards(out)
    assert meta["classes"] == ["ant", "bee", "zebra"] and meta["splits"]["train"]["per_class"] == {
        "ant": 2, "bee": 2, "zebra": 2}
    got = read_all(out, "train", 4)
    for i, r in enumerate(rows):
        assert got[str(i)]["cls"] == meta["classes"].index(r["label"]) and got[str(i)]["tags"] == r["tags"]


# ------------------------------------------------------------------------------------------------------- emoji

EMOJI_JSON = [
    {"unified": "1F600", "name": "GRINNING FACE", "short_names": ["grinning"], "category": "Smileys & Emotion",
     "subcategory": "face-smiling", "sort_order": 1},
    {"unified": "1F385", "name": "FATHER CHRISTMAS", "short_names": ["santa"], "category": "People & Body",
     "subcategory": "person-fantasy", "sort_order": 2,
     "skin_variations": {"1F3FD": {"unified": "1F385-1F3FD"}}},
    {"unified": "1F3FB", "name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "short_names": ["skin-tone-2"],
     "category": "Component", "subcategory": "skin-tone", "sort_order": 3},
    {"unified": "0023-FE0F-20E3", "name": "HASH KEY", "short_names": ["hash"], "category": "Symbols",
     "subcategory": "keycap", "sort_order": 4},
    {"unified": "1F3F4-E0067-E0062-E0065-E006E-E0067-E007F", "name": "England Flag", "short_names": ["flag-england"],
     "category": "Flags", "subcategory": "subdivision-flag", "sort_order": 5},
]
EMOJI_FILES = ["1f600", "1f385-1f3fd", "0023-fe0f-20e3", "23-fe0f-20e3", "1f3f4-e0067_e0062_e0065_e006e_e0067",
               "2603", "e000", "1f9d1-200d-1f680"]


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def fake_npm_cache(cache: Path) -> None:
    (cache / "npm").mkdir(parents=True)
    with tarfile.open(cache / "npm" / "lobehub-fluent-emoji-3d-1.1.0.tgz", "w:gz") as tar:
        for i, stem in enumerate(EMOJI_FILES):
            img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # transparent border, opaque centre
            img.paste((200, 10 * i, 50, 255), (8, 8, 24, 24))
            buf = io.BytesIO()
            img.save(buf, format="WEBP", lossless=True)
            add(tar, f"package/assets/{stem}.webp", buf.getvalue())
    with tarfile.open(cache / "npm" / "emoji-datasource-google-16.0.0.tgz", "w:gz") as tar:
        add(tar, "package/emoji.json", json.dumps(EMOJI_JSON).encode())


def test_emoji_code_points_ignore_fe0f_and_cancel_tag():
    assert code_points("0023-fe0f-20e3") == code_points("23-FE0F-20E3") == (0x23, 0x20E3)
    assert code_points("1f3f4-e0067_e0062") == code_points("1F3F4-E0067-E0062-E007F")


def test_emoji_source_offline(tmp_path, monkeypatch):
    cache, out = tmp_path / "cache", tmp_path / "out"
    fake_npm_cache(cache)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm: the cached tarballs must be used
    assert main(["data", "emoji", "--out", str(out), "--cache", str(cache), "--size", "16",
                 "--val-fraction", "0.3", "--seed", "2"]) == 0
    meta = check_meta_matches_shards(out)
    assert meta["classes"] == ["Smileys & Emotion", "People & Body", "Symbols", "Flags"]  # no "Component" image
    assert meta["skipped"]["count"] == 2 and sorted(meta["skipped"]["ids"]) == ["1f9d1-200d-1f680", "e000"]
    got = {**read_all(out, "train", 16), **read_all(out, "val", 16)}
    assert len(got) == 6
    assert got["1f600"]["txt"] == unicodedata.name("\U0001F600").lower()
    assert got["1f600"]["tags"] == "grinning, face, smiling" and got["1f600"]["cls"] == 0
    assert got["1f385-1f3fd"]["txt"] == "father christmas: medium skin tone" and got["1f385-1f3fd"]["cls"] == 1
    assert got["23-fe0f-20e3"]["txt"] == got["0023-fe0f-20e3"]["txt"] == "hash key"
    assert got["1f3f4-e0067_e0062_e0065_e006e_e0067"]["txt"] == "england flag"
    assert got["2603"]["txt"] == "snowman" and got["2603"]["cls"] == -1  # unicode name, no metadata: kept
    for s in got.values():
        assert s["image"].shape == (3, 16, 16) and s["image"][:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # white bg
    train = {s["key"] for s in ShardReader(str(out), image_size=16, split="train")}
    assert ("23-fe0f-20e3" in train) == ("0023-fe0f-20e3" in train)  # one emoji, one split


# ----------------------------------------------------------------------------------------------- fashion-mnist

def idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def fake_deb(path: Path, files: dict[str, bytes]) -> None:
    """A minimal .deb: an ar archive holding debian-binary, control.tar.xz and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, blob in files.items():
            add(tar, f"./usr/share/datasets/fashion-mnist/{name}", blob)
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]
    with path.open("wb") as f:
        f.write(b"!<arch>\n")
        for name, blob in members:
            f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode())
            f.write(blob + (b"\n" if len(blob) % 2 else b""))


def test_fashion_mnist_from_a_cached_deb(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (4, 28, 28))
    train_y, test_y = np.arange(12) % 10, np.array([9, 0, 3, 3])
    cache, out = tmp_path / "cache", tmp_path / "out"
    (cache / "apt").mkdir(parents=True)
    fake_deb(cache / "apt" / "dataset-fashion-mnist_0.0-1_all.deb", {
        "train-images-idx3-ubyte.gz": idx(train), "train-labels-idx1-ubyte.gz": idx(train_y),
        "t10k-images-idx3-ubyte.gz": idx(test), "t10k-labels-idx1-ubyte.gz": idx(test_y)})
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "not-installed")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no apt-get: the cached .deb must be used
    assert main(["data", "fashion-mnist", "--out", str(out), "--cache", str(cache), "--shard-size", "5"]) == 0
    meta = check_meta_matches_shards(out)
    assert meta["image_size"] == 28 and meta["classes"][0] == "T-shirt/top" and meta["classes"][9] == "Ankle boot"
    assert meta["splits"]["val"]["count"] == 4 and meta["splits"]["val"]["per_class"] == {
        "Ankle boot": 1, "T-shirt/top": 1, "Dress": 2}
    for split, images, labels, prefix in (("train", train, train_y, "train"), ("val", test, test_y, "val")):
        got = read_all(out, split, 28)
        assert len(got) == len(images)
        for i in range(len(images)):
            s = got[f"{prefix}_{i:05d}"]
            assert s["cls"] == labels[i] and s["tags"] == fashion_mnist.TAGS[labels[i]]
            assert fashion_mnist.NAMES[labels[i]] in s["txt"]
            assert np.array_equal(s["image"].mul(255).round().numpy(), np.stack([images[i]] * 3))


# ------------------------------------------------------------------------------------------------------- fetch

def test_missing_client_names_package_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match=r"npm pack @scope/pkg@1\.2\.3 --pack-destination"):
        npm_tarball("@scope/pkg", "1.2.3", cache=tmp_path)
    with pytest.raises(FetchError, match=r"apt-get download some-dataset"):
        apt_deb("some-dataset", cache=tmp_path)
    assert main(["data", "emoji", "--out", str(tmp_path / "out"), "--cache", str(tmp_path)]) == 1
