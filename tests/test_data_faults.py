"""`armkit data` under bad input: one bad file never costs the dataset, a failed re-run never costs the old one."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from armkit.recipes.commands.cli import main
from armkit.recipes.data import writer


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height zeros: a few kB on disk, `width * height` pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def good(folder: Path, name: str, colour=(200, 30, 30), size=(12, 10)) -> None:
    Image.new("RGB", size, colour).save(folder / f"{name}.png")
    (folder / f"{name}.txt").write_text(f"a picture called {name}", encoding="utf-8")


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format=fmt)
    return buf.getvalue()


def shard_members(out: Path) -> dict[str, bytes]:
    found = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            found.update({m.name: tar.extractfile(m).read() for m in tar if m.isfile()})
    return found


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_bad_files_are_skipped_counted_and_named(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        good(src, f"good{i}")
    bad = {"random.png": b"\x13\x37" * 500, "empty.png": b"", "cut.png": encoded("PNG")[:60],
           "cut.jpg": encoded("JPEG")[:300], "bomb.png": png_bomb(20000, 20000)}
    for name, data in bad.items():
        (src / name).write_bytes(data)
        (src / name).with_suffix(".txt").write_text(f"caption of {name}")
    Image.new("RGB", (6000, 1)).save(src / "strip.png")  # far past the aspect limit
    (src / "strip.txt").write_text("a strip")
    good(src, "latin1")
    (src / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))  # not UTF-8

    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--val-fraction", "0",
                 "--size", "8"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["train"]["count"] == 4
    assert meta["skipped"]["count"] == 7
    assert meta["skipped"]["by_reason"] == {"caption not UTF-8": 1, "image too large": 2, "unreadable image": 4}
    assert sorted(meta["skipped"]["ids"]) == sorted([*bad, "strip.png", "latin1.png"])
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train-000000.tar"]  # no .part, no staging
    assert sorted(shard_members(out)) == sorted(f"good{i}.{ext}" for i in range(4) for ext in
                                                ("png", "txt", "cls", "json"))
    err = capsys.readouterr().err
    for name in [*bad, "strip.png", "latin1.png"]:
        assert repr(name) in err, name


def test_nothing_readable_exits_1_and_keeps_the_old_dataset(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        good(src, f"g{i}")
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--shard-size", "2"]) == 0
    before = snapshot(out)
    assert len(before) == 4  # 2 train shards, 1 val shard, meta.json
    for i in range(5):
        (src / f"g{i}.png").write_bytes(b"garbage")
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--shard-size", "2"]) == 1
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_a_run_interrupted_mid_write_keeps_the_old_dataset(tmp_path, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(14):
        good(src, f"g{i:02d}", colour=(10 * i, 0, 0))
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--shard-size", "2"]) == 0
    before = snapshot(out)
    assert len(before) == 9  # 7 train shards of 2 (13 samples), 1 val shard, meta.json
    real, calls = writer.encode_png, []

    def dies_on_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C (a SIGKILL leaves a staging folder, removed by the next run)
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "encode_png", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        main(["data", "folder", "--src", str(src), "--out", str(out), "--shard-size", "3"])
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)

    (out / f"{writer.STAGE_PREFIX}999999").mkdir()  # what a killed run leaves behind
    (out / f"{writer.STAGE_PREFIX}999999" / "train-000000.tar").write_bytes(b"half")
    monkeypatch.setattr(writer, "encode_png", real)
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--shard-size", "3"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["meta.json"] + [s["name"] for info in meta["splits"].values() for s in info["shards"]])


def test_relative_src_finds_every_image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("imgs/sub").mkdir(parents=True)
    for i in range(3):
        good(Path("imgs"), f"a{i}")
        good(Path("imgs/sub"), f"b{i}")
    assert main(["data", "folder", "--src", "imgs", "--out", "out", "--val-fraction", "0"]) == 0
    meta = json.loads(Path("out/meta.json").read_text())
    assert meta["splits"]["train"]["count"] == 6 and meta["skipped"]["count"] == 0


def test_exif_orientation_is_applied(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    img = Image.new("RGB", (8, 4), (255, 0, 0))
    img.paste((0, 0, 255), (4, 0, 8, 4))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(src / "phone.png", exif=exif)
    (src / "phone.txt").write_text("a photo taken sideways")
    assert main(["data", "folder", "--src", str(src), "--out", str(out), "--val-fraction", "0"]) == 0
    stored = Image.open(io.BytesIO(shard_members(out)["phone.png"])).convert("RGB")
    assert stored.size == (4, 8)  # upright: portrait
    assert stored.getpixel((1, 1)) == (255, 0, 0) and stored.getpixel((1, 6)) == (0, 0, 255)  # red on top
