"""Shared test fixtures: small random-init parts only; nothing downloads."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Tests use tiny models: one intra-op thread is fastest, and far faster than two on a busy 2-core machine."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_encoder():
    from armkit.tokenizer.encoders import TimmEncoder

    return TimmEncoder("vit_tiny_patch16_224", image_size=32, model_kwargs=dict(depth=1))


COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square"]


def make_shapes_folder(folder, n: int = 48, seed: int = 0):
    """n small images of coloured circles and squares; caption 'a <colour> <shape>', label = colour index."""
    import json
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour, shape = COLOURS[i % 4], SHAPES[(i // 4) % 2]
        image = Image.new("RGB", (40, 40), "white")
        x, y = rng.randint(2, 12), rng.randint(2, 12)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)([x, y, x + 22, y + 22], fill=colour)
        image.save(folder / f"{i:03d}.png")
        rows.append({"path": f"{i:03d}.png", "caption": f"a {colour} {shape}", "label": i % 4,
                     "tags": f"{colour}, {shape}"})
    (folder / "index.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder / "index.jsonl"


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shards of 48 shape images (36 train in 5 shards, 12 val), written through `armkit data folder`."""
    from armkit.recipes.commands.cli import main

    root = tmp_path_factory.mktemp("tiny-data")
    index = make_shapes_folder(root / "images")
    out = root / "shards"
    assert main(["data", "folder", "--src", str(root / "images"), "--index", str(index), "--out", str(out),
                 "--shard-size", "8", "--val-fraction", "0.25"]) == 0
    return out
