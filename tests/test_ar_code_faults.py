"""Code shards skip and count bad samples like image shards (issue #30): crafted bad code samples placed among good
ones are skipped with a warning naming shard and key and counted (reader, training stream, data/skipped in a short
AR run); a bad meta.json is one line and exit 2; `armkit tokenize` skips and records unusable image samples and
never writes an unsafe member name."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest
from test_ar_recipes import tiny_tokenizer

from armkit.recipes.ar.codes import FORMAT, CodeDataModule, CodeReader, CodesMetaError, CodeStream, code_bytes
from armkit.recipes.commands.cli import main
from armkit.recipes.data.module import ResumableLoader
from armkit.recipes.data.reader import SkippedSampleWarning
from armkit.recipes.data.tar_stream import expected_counts

ROOT = Path(__file__).resolve().parents[1]
AR_TINY = str(ROOT / "recipes" / "ar" / "tiny.yaml")
CODEBOOK, GRID, CLASSES = 1000, [2, 2], ["red", "green", "blue"]  # tiny.yaml's ARModel: codebook 1000, max_grid 8


def info(**kw) -> bytes:
    return json.dumps({"grid": GRID, "caption": "a red circle", "label": 1, "tags": "", **kw}).encode()


def good(i: int) -> dict:
    return {"__key__": f"good-{i:02d}", "codes": code_bytes([i, 7, 999, 0]), "json": info(label=i % 3)}


def edit(**kw) -> dict:  # a good edit pair, to break one field of
    return {"codes": code_bytes([1, 2, 3, 4]), "src": code_bytes([5, 6, 7, 8]),
            "json": info(**{"instruction": "make it blue", "source_grid": GRID, "source_key": "good-00", **kw})}


# Each would kill training with a traceback, or train on nonsense with nothing counted, without the checks.
BAD = {
    "code outside the codebook": {"codes": code_bytes([1, 2, CODEBOOK, 3]), "json": info()},
    "huge code": {"codes": code_bytes([1, 2, 2**31 - 1, 3]), "json": info()},
    "negative code": {"codes": code_bytes([1, -1, 2, 3]), "json": info()},
    "grid beyond max_grid": {"codes": code_bytes([1] * 81), "json": info(grid=[9, 9])},
    "grid other than the tokenizer's": {"codes": code_bytes([1] * 6), "json": info(grid=[2, 3])},
    "grid disagrees with its codes": {"codes": code_bytes([1, 2, 3]), "json": info()},
    "grid 0": {"codes": b"", "json": info(grid=[0, 0])},
    "grid not a list": {"codes": code_bytes([1, 2, 3, 4]), "json": info(grid="2x2")},
    "grid of booleans": {"codes": code_bytes([1]), "json": info(grid=[True, True])},
    "grid of floats": {"codes": code_bytes([1, 2, 3, 4]), "json": info(grid=[2.0, 2.0])},
    "no grid": {"codes": code_bytes([1, 2, 3, 4]), "json": json.dumps({"caption": "x", "label": 0}).encode()},
    "truncated codes": {"codes": code_bytes([1, 2, 3, 4])[:15], "json": info()},
    "empty codes": {"codes": b"", "json": info()},
    "label a string": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label="cat")},
    "label a float": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label=1.5)},
    "label null": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label=None)},
    "label a boolean": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label=True)},
    "label below -1": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label=-5)},
    "label outside the classes": {"codes": code_bytes([1, 2, 3, 4]), "json": info(label=len(CLASSES))},
    "caption not a string": {"codes": code_bytes([1, 2, 3, 4]), "json": info(caption=["a", "list"])},
    "tags not a string": {"codes": code_bytes([1, 2, 3, 4]), "json": info(tags={"a": 1})},
    "json not JSON": {"codes": code_bytes([1, 2, 3, 4]), "json": b"{not json"},
    "json a list": {"codes": code_bytes([1, 2, 3, 4]), "json": b"[1, 2]"},
    "json not UTF-8": {"codes": code_bytes([1, 2, 3, 4]), "json": b'{"grid": [2, 2], "caption": "\xff"}'},
    "no json": {"codes": code_bytes([1, 2, 3, 4])},
    "no codes": {"json": info()},
    "edit source outside the codebook": {**edit(), "src": code_bytes([5, 6, CODEBOOK + 5, 8])},
    "edit source truncated": {**edit(), "src": code_bytes([5, 6, 7, 8])[:-2]},
    "edit source without its grid": edit(source_grid=None),
    "edit source grid beyond the tokenizer's": {**edit(source_grid=[3, 3]), "src": code_bytes([1] * 9)},
    "edit instruction not a string": edit(instruction=7),
}


def write_tar(path: Path, samples: list[dict], *, raw_members: list[tuple[str, bytes]] = ()) -> None:
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if not ext.startswith("__"):
                    add(tar, f"{sample['__key__']}.{ext}", data)
        for name, data in raw_members:
            add(tar, name, data)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def meta(**kw) -> dict:
    tok = {"fingerprint": "f" * 64, "path": "/tok", "codebook_size": CODEBOOK, "levels": [8, 5, 5, 5],
           "num_codebooks": 1, "grid": GRID, "image_size": [32, 32]}
    return {"format": FORMAT, "format_version": 1, "tokenizer": tok, "classes": CLASSES, **kw}


def code_folder(folder: Path, bad: list[dict], *, goods: int = 15, shards: int = 1) -> list[str]:
    """`goods` good samples dealt over `shards` train shards, bad sample j right after good sample j % (goods - 2) (so
    the last good sample of every shard comes after all of its shard's bad ones); returns the good keys."""
    folder.mkdir(parents=True, exist_ok=True)
    per: list[list[dict]] = [[] for _ in range(shards)]
    for i in range(goods):
        per[i % shards].append(good(i))
        per[i % shards] += [{"__key__": f"bad-{j:02d}", **b} for j, b in enumerate(bad) if j % (goods - 2) == i]
    listing = []
    for n, samples in enumerate(per):
        write_tar(folder / f"train-{n:06d}.tar", samples)
        listing.append({"name": f"train-{n:06d}.tar", "count": len(samples)})
    (folder / "meta.json").write_text(json.dumps(meta(splits={"train": {"count": goods, "shards": listing}})))
    return [f"good-{i:02d}" for i in range(goods)]


@pytest.mark.parametrize("fault", list(BAD))
def test_a_bad_code_sample_among_good_ones_is_skipped_and_counted(fault, tmp_path):
    keys = code_folder(tmp_path, [BAD[fault]])
    reader = CodeReader(str(tmp_path), image_size=1, split="train")
    with pytest.warns(SkippedSampleWarning, match=r"'bad-00' in .*train-000000\.tar"):
        got = [s["key"] for s in reader]
    assert got == keys and reader.skipped == 1


def test_every_fault_at_once_reader_and_training_stream_count_them_all(tmp_path):
    bad = list(BAD.values())
    keys = code_folder(tmp_path, bad, shards=2)
    reader = CodeReader(str(tmp_path), image_size=1, batch_size=4, split="train")
    with pytest.warns(SkippedSampleWarning):
        batches = list(reader)
    assert sorted(k for b in batches for k in b["key"]) == sorted(keys) and batches[-1]["skipped"] == len(bad)
    # the training stream: one epoch of 15 good samples is three batches of 5, counted as they are skipped
    stream = CodeStream(str(tmp_path), image_size=1, batch_size=5, shuffle_buffer=1, split="train")
    loader = iter(ResumableLoader(stream))
    with pytest.warns(SkippedSampleWarning):
        epoch = [next(loader) for _ in range(3)]
    assert sorted(k for b in epoch for k in b["key"]) == sorted(keys)
    assert epoch[-1]["skipped"] == len(bad)
    assert all(max(s["codes"].max() for s in b["samples"]) < CODEBOOK for b in epoch)


def test_a_truncated_code_shard_counts_every_sample_it_lost(tmp_path):
    code_folder(tmp_path, [], goods=15)
    shard = tmp_path / "train-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])  # cut inside a member, about half way
    reader = CodeReader(str(tmp_path), image_size=1, split="train")
    with pytest.warns(SkippedSampleWarning, match="shard ends early"):
        got = list(reader)
    assert 0 < len(got) < 15 and len(got) + reader.skipped == 15


def metrics(run: Path) -> list[dict]:
    return [r for p in sorted(run.glob("csv/version_*/metrics.csv")) for r in csv.DictReader(p.open())]


def train_args(codes: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--config", AR_TINY, f"--data.init_args.train={codes}", "--data.init_args.val=null",
            f"--trainer.default_root_dir={run}", "--trainer.enable_progress_bar=false", *extra]


def test_short_ar_run_on_faulty_codes_trains_and_logs_data_skipped(tmp_path):
    code_folder(tmp_path / "codes", list(BAD.values()), goods=15, shards=1)
    run = tmp_path / "run"
    with pytest.warns(SkippedSampleWarning):
        assert main(train_args(tmp_path / "codes", run, "--trainer.max_steps=2", "--trainer.log_every_n_steps=1",
                               "--data.init_args.batch_size=4", "--data.init_args.shuffle_buffer=1")) == 0
    skipped = [float(r["data/skipped"]) for r in metrics(run) if r.get("data/skipped")]
    assert skipped and max(skipped) > 0
    assert any(r.get("train/loss") for r in metrics(run))


META_FAULTS = {
    "missing": None,
    "not JSON": "{format: codes",
    "not an object": "[1, 2]",
    "image shards' meta": json.dumps({"name": "emoji", "splits": {}}),
    "no tokenizer": json.dumps({"format": FORMAT}),
    "tokenizer a string": json.dumps({**meta(), "tokenizer": "tok"}),
    "no codebook_size": json.dumps({**meta(), "tokenizer": {k: v for k, v in meta()["tokenizer"].items()
                                                           if k != "codebook_size"}}),
    "codebook_size a string": json.dumps({**meta(), "tokenizer": {**meta()["tokenizer"], "codebook_size": "1000"}}),
    "grid of one number": json.dumps({**meta(), "tokenizer": {**meta()["tokenizer"], "grid": [2]}}),
    "no fingerprint": json.dumps({**meta(), "tokenizer": {k: v for k, v in meta()["tokenizer"].items()
                                                         if k != "fingerprint"}}),
    "levels null": json.dumps({**meta(), "tokenizer": {**meta()["tokenizer"], "levels": None}}),
    "classes a string": json.dumps({**meta(), "classes": "red,green"}),
}


def faulty_meta(folder: Path, fault: str) -> None:
    """A code folder whose meta.json is META_FAULTS[fault] (None: no meta.json)."""
    code_folder(folder, [])
    text = META_FAULTS[fault]
    if text is None:
        (folder / "meta.json").unlink()
    else:
        (folder / "meta.json").write_text(text)


@pytest.mark.parametrize("fault", list(META_FAULTS))
def test_meta_json_faults_are_one_line_errors(fault, tmp_path):
    faulty_meta(tmp_path / "codes", fault)
    with pytest.raises(CodesMetaError) as e:
        CodeDataModule(train=str(tmp_path / "codes"), batch_size=4)
    assert "meta.json" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("fault", ["missing", "not JSON", "codebook_size a string"])
def test_training_on_a_bad_meta_json_exits_2_with_one_line(fault, tmp_path, capsys):
    faulty_meta(tmp_path / "codes", fault)
    capsys.readouterr()
    assert main(train_args(tmp_path / "codes", tmp_path / "run", "--trainer.max_steps=1")) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("config error: ") and "meta.json" in err[0], err


# -- armkit tokenize ---------------------------------------------------------------------------------------------


def png(colour: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


UNSAFE = ["../../escape", "/abs/path", "a//b", "x/../y", "sp ace", "back\\slash", "caf\u00e9"]


def test_tokenize_skips_unsafe_names_and_records_every_skip_in_meta(tmp_path, capsys):
    data = tmp_path / "images"
    data.mkdir()
    goods = [{"__key__": f"img-{i}", "png": png(c), "txt": f"a {c} square".encode(), "cls": str(i % 3).encode()}
             for i, c in enumerate(["red", "green", "blue", "red"])]
    unsafe = [(f"{key}.png", png("red")) for key in UNSAFE] + [(f"{key}.txt", b"a red square") for key in UNSAFE]
    bad = [{"__key__": "broken", "png": b"\x89PNG not really", "txt": b"a broken square"},
           {"__key__": "no-caption", "png": png("blue")},
           {"__key__": "label-9", "png": png("green"), "txt": b"a green square", "cls": b"9"}]
    write_tar(data / "train-000000.tar", goods[:2] + bad)
    # members in name order, so that each unsafe sample's .png and .txt are adjacent
    write_tar(data / "train-000001.tar", goods[2:], raw_members=sorted(unsafe))
    listing = [{"name": "train-000000.tar", "count": 5}, {"name": "train-000001.tar", "count": 2 + len(UNSAFE)}]
    (data / "meta.json").write_text(json.dumps({"classes": CLASSES, "splits": {"train": {
        "count": 7 + len(UNSAFE), "shards": listing}}}))
    out = tmp_path / "codes"
    with pytest.warns(SkippedSampleWarning) as caught:
        assert main(["tokenize", "--tokenizer", str(tiny_tokenizer(tmp_path / "tok", 0)), "--data", str(data),
                     "--out", str(out), "--splits", "train", "--batch-size", "3"]) == 0
    warned = " ".join(str(w.message) for w in caught)
    assert all(repr(key) in warned for key in UNSAFE) and "'broken' in" in warned
    printed = capsys.readouterr().out
    assert f"skipped: {3 + len(UNSAFE)} image samples" in printed and f"{len(UNSAFE)} unsafe name" in printed
    names = [m for shard in sorted(out.glob("*.tar")) for m in tarfile.open(shard).getnames()]
    assert sorted(names) == sorted(f"img-{i}.{ext}" for i in range(4) for ext in ("codes", "json"))
    written = json.loads((out / "meta.json").read_text())
    skipped = written["skipped"]
    assert skipped["count"] == 3 + len(UNSAFE) and written["splits"]["train"]["skipped"] == 3 + len(UNSAFE)
    assert skipped["by_reason"] == {"unsafe name": len(UNSAFE), "cannot decode .png": 1, "no caption": 1,
                                    "label outside the classes": 1}
    assert any("../../escape" in d for d in skipped["details"]) and written["classes"] == CLASSES
    assert [s["count"] for s in written["splits"]["train"]["shards"]] == [2, 2]
    shards = [str(p) for p in sorted(out.glob("train-*.tar"))]  # the reader counts a cut code shard's losses by them
    assert expected_counts(shards) == dict.fromkeys(shards, 2)
    assert sorted(s["key"] for s in CodeReader(str(out), image_size=1, split="train")) == [f"img-{i}"
                                                                                             for i in range(4)]
    # a resumed run re-reads the finished shards and records the same skips
    again = out / "meta.json"
    assert main(["tokenize", "--tokenizer", str(tmp_path / "tok"), "--data", str(data), "--out", str(out),
                 "--splits", "train"]) == 0
    assert json.loads(again.read_text())["skipped"] == skipped
