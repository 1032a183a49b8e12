"""An independent judge of generated images: a small CNN trained on the REAL training pixels of a labelled dataset.

It is neither a tokenizer's teacher nor any reward's network, so the AR demo, the AR-friendliness probe and GRPO's
independent measure can ask "does this sample look like its prompt's class?" without grading a model with its own
features. Trained for a fixed number of seeded steps on one thread's worth of work (about a minute on Fashion-MNIST),
so two runs give the same judge.

    judge = train_classifier(*fashion_mnist_pixels("train"), steps=600, seed=0)
    accuracy(judge, images, labels)           # images [N, 1|3, H, W] in [0, 1]
    fashion_mnist_judge(steps=600, seed=0)    # the same judge, trained once per process (optionally from a file)
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as nnf

from armkit.recipes.data.reader import resize_crop

SIZE = 32


class SmallCNN(nn.Module):
    """Two conv blocks and an MLP on [N, 1, 32, 32] grayscale in [0, 1]; `features` is the 128-d penultimate layer."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU())
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((to_gray32(x) - 0.5) / 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_gray32(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [0, 1] -> [N, 1, 32, 32]: the channel mean, resized (bicubic, antialiased) if needed."""
    g = images.float().mean(1, keepdim=True) if images.shape[1] != 1 else images.float()
    if g.shape[-2:] != (SIZE, SIZE):
        g = nnf.interpolate(g, size=(SIZE, SIZE), mode="bicubic", antialias=True).clamp(0, 1)
    return g


@cache
def fashion_mnist_pixels(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's real `split` ("train": 60,000, "val": the 10,000 test images) at 32 px, resized the way
    armkit's shards are read (PIL bicubic, reader.resize_crop): images [N, 1, 32, 32] in [0, 1], labels [N]."""
    from armkit.recipes.data.fashion_mnist import FILES, files_dir, read_idx

    folder = files_dir(None)
    image_file, label_file = FILES[split]
    raw = read_idx(folder / image_file)
    images = np.stack([np.asarray(resize_crop(Image.fromarray(a, "L"), SIZE)) for a in raw])
    labels = torch.from_numpy(read_idx(folder / label_file).astype(np.int64))
    return torch.from_numpy(images).float().div_(255.0)[:, None], labels


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, steps: int = 600, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> SmallCNN:
    """Adam on seeded random batches for a fixed number of steps (not seconds: the judge must not depend on load)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(int(labels.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.enable_grad():  # callers evaluate under no_grad
        for _ in range(steps):
            idx = torch.randint(0, len(images), (batch_size,), generator=gen)
            loss = nnf.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@cache
def fashion_mnist_judge(*, steps: int = 600, seed: int = 0, file: Path | None = None) -> SmallCNN:
    """`train_classifier` on Fashion-MNIST's 60,000 real training images, once per process (it is deterministic).
    `file`: a safetensors copy of the judge, read when its steps and seed match, else written (atomically) after
    training, so parallel processes (GRPO seeds) train it once between them."""
    from safetensors.torch import load_file, safe_open, save_file

    tag = {"steps": str(steps), "seed": str(seed), "data": "fashion-mnist train"}
    if file is not None and file.is_file():
        with safe_open(str(file), "pt") as f:
            if f.metadata() == tag:
                judge = SmallCNN()
                judge.load_state_dict(load_file(str(file)))
                return judge.eval()
    judge = train_classifier(*fashion_mnist_pixels("train"), steps=steps, seed=seed)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        part = file.with_name(f"{file.name}.{os.getpid()}.part")
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(part), metadata=tag)
        part.replace(file)
    return judge


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model(c).argmax(1) for c in images.split(batch_size)]) if len(images) else \
        torch.zeros(0, dtype=torch.long)


@torch.no_grad()
def features(model: SmallCNN, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.features(c) for c in images.split(batch_size)])


def accuracy(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, images) == labels).float().mean()) if len(labels) else float("nan")
