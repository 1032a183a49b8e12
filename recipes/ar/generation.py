"""The work behind `armkit generate`: text-to-image, editing and captioning with a trained AR model, rendered by its
tokenizer.

The command's arguments, their checks and its full description are in recipes/commands/generate.py. Samples are
generated `--batch-size` at a time (a progress bar when there is more than one batch) and written as they come, so
memory does not grow with `--num`; prompts longer than the model's context are cut with a warning.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from armkit.backbones import sequence as S
from armkit.backbones.generate import Sampling, generate_image, generate_text
from armkit.recipes.ar.codes import check_fingerprint, tokenizer_fingerprint
from armkit.recipes.ar.export import load_ar
from armkit.recipes.data.images import ImageRejected, open_image
from armkit.recipes.data.reader import image_tensor
from armkit.tokenizer import Tokenizer

GRID_IMAGES, GRID_ROW = 256, 32  # grid.png shows at most 256 samples, 32 a row (each has its own PNG anyway)


def load_tokenizer(record: dict[str, Any], override: Path | None):
    """The codes' tokenizer, checked against the fingerprint the AR model was trained with."""
    path = override or Path(record.get("path", ""))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"tokenizer export {path} not found; pass --tokenizer")
    check_fingerprint(record.get("fingerprint", "?"), tokenizer_fingerprint(path), expected_from="the AR model",
                      got_from=f"--tokenizer {path}")
    return Tokenizer.from_pretrained(path)


def check_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `mps`, present on this machine; else a ValueError naming the flag."""
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            raise ValueError(f"--device {name!r}: this machine has {count} CUDA device(s)")
    elif name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("--device 'mps': MPS is not available on this machine")
    return torch.device(name)


def open_input_image(path: Path):
    """--image through the data path's safe reader (pixel and aspect limits checked on the header, before decoding)
    -> a PIL image; anything else is a ValueError naming the file. Called before the model is loaded."""
    try:
        return open_image(path)
    except ImageRejected as e:
        raise ValueError(f"--image {str(path)!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- Pillow raises many kinds for a file that is not an image
        raise ValueError(f"--image {str(path)!r} is not a readable image ({type(e).__name__}: "
                         f"{' '.join(str(e).split())})") from None


def read_image(path: Path, size: int) -> torch.Tensor:
    """--image as [1, 3, size, size] in [0, 1] (see `open_input_image`)."""
    return image_tensor(open_input_image(path), size)[None]


def save_image_file(image: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image

    save_image(image, path)


def save_grid(images: torch.Tensor, out: Path, per_row: int, *, min_size: int = 96) -> None:
    """grid.png with each sample enlarged by nearest neighbour (each pixel a square block) to at least `min_size`
    px, so 32-px samples can be judged."""
    from torchvision.utils import make_grid, save_image

    factor = -(-min_size // min(images.shape[-2:]))  # ceil: the smallest whole factor reaching min_size
    shown = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest") if factor > 1 \
        else images
    save_image(make_grid(shown, nrow=per_row, padding=4, pad_value=1.0), out / "grid.png")


def context_length(model) -> int | None:
    config = model.lm.config
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(n) if n else None


def text_budget(model, fixed: int, what: str) -> int | None:
    """Text ids that fit beside `fixed` other positions in the model's context (None: no limit known)."""
    n = context_length(model)
    if n is None:
        return None
    if fixed > n:
        raise ValueError(f"the model's context ({n} positions) cannot hold {what} ({fixed} positions)")
    return n - fixed


def cut_ids(ids: list[int], budget: int | None, flag: str, warn: Callable[[str], None]) -> list[int]:
    if budget is not None and len(ids) > budget:
        warn(f"{flag} is {len(ids)} text tokens; cut to the {budget} the model's context leaves")
        return ids[:budget]
    return ids


def batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def generate(args: argparse.Namespace, warn: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    modes = [bool(args.prompt), bool(args.image and args.instruction), bool(args.image and args.caption)]
    if sum(modes) != 1:
        raise ValueError("give --prompt (text-to-image), or --image with --instruction (editing) or --caption")
    from tqdm import tqdm

    device = check_device(args.device)
    picture = open_input_image(args.image) if args.image else None  # a bad image fails before the model loads
    model, record = load_ar(args.model)
    model.to(device)
    tok = load_tokenizer(record, args.tokenizer).to(device)
    v, codec, grid = model.vocab, model.codec, tuple(tok.grid)
    if max(grid) > v.max_grid:
        raise ValueError(f"the tokenizer's grid {list(grid)} exceeds the model's max_grid {v.max_grid}")
    area = grid[0] * grid[1]
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    batch_size = getattr(args, "batch_size", 16)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": str(args.model), "tokenizer": record.get("fingerprint"), "grid": list(grid),
                              "sampling": sampling._asdict(), "seed": args.seed, "kv_cache": not args.no_cache}
    source = None
    if picture is not None:
        pixels = image_tensor(picture, tok.encoder.image_size[0])[None].to(device)  # [1, 3, S, S]
        source = tok.encode(pixels)[0].tolist()
    if args.caption:
        room = text_budget(model, 1 + area + 4, f"the {grid[0]}x{grid[1]} image to caption")
        max_new = args.max_new_tokens
        if room is not None and max_new > room:
            warn(f"--max-new-tokens {max_new}: cut to the {room} the model's context leaves")
            max_new = room
        ids = generate_text(model, [S.understanding_prompt(v, source, grid)], max_new_tokens=max_new,
                            sampling=sampling if args.temperature > 0 else Sampling(0.0), generator=gen,
                            use_cache=not args.no_cache)
        report["captions"] = [codec.decode(ids[0])]
        (args.out / "caption.txt").write_text(report["captions"][0] + "\n")
    else:
        if args.prompt:
            room = text_budget(model, 1 + 3 + area, f"a {grid[0]}x{grid[1]} image")
            texts = [cut_ids(codec.encode(p), room, "--prompt", warn) for p in args.prompt]
            rows = [t for t in texts for _ in range(args.num)]
            scales = [args.guidance]

            def prompts(batch: range) -> tuple[list, list]:
                cond = [S.text_to_image_prompt(v, rows[i], grid) for i in batch]
                return cond, [[S.text_to_image_prompt(v, [], grid)] * len(cond)]

            report.update(mode="text-to-image", prompts=args.prompt, guidance=args.guidance)
            per_row, total = args.num, len(rows)
        else:
            room = text_budget(model, 1 + (area + 4) + 3 + area, f"two {grid[0]}x{grid[1]} images")
            instr = cut_ids(codec.encode(args.instruction), room, "--instruction", warn)
            scales = [args.guidance, args.image_guidance]

            def prompts(batch: range) -> tuple[list, list]:
                n = len(batch)
                return [S.editing_prompt(v, source, grid, instr, grid)] * n, [
                    [S.editing_prompt(v, source, grid, instr, grid, drop_text=True)] * n,
                    [S.editing_prompt(v, source, grid, instr, grid, drop_text=True, drop_image=True)] * n]

            report.update(mode="editing", instruction=args.instruction, image=str(args.image),
                          guidance=args.guidance, image_guidance=args.image_guidance)
            per_row, total = args.num + 1, args.num
        files = ["000.png"] if source is not None else []  # editing: 000 is the source's reconstruction
        codes_all, shown = [], []
        chunks = batches(total, batch_size)
        for batch in tqdm(chunks, desc="armkit generate", unit="batch", file=sys.stderr, disable=len(chunks) == 1):
            cond, weaker = prompts(batch)
            codes = generate_image(model, cond, grid, weaker=weaker, scales=scales, sampling=sampling,
                                   generator=gen, use_cache=not args.no_cache)
            images = tok.decode(codes, steps=args.steps, generator=gen).cpu()  # [B, 3, H, W] in [0, 1]
            for image in images:
                files.append(f"{len(files):03d}.png")
                save_image_file(image, args.out / files[-1])
            if sum(len(s) for s in shown) < GRID_IMAGES:
                shown.append(images)
            codes_all += codes.tolist()
        if source is not None:  # decoded after the edits, as before batching: a seed gives the same images
            recon = tok.decode(torch.tensor([source], device=device), steps=args.steps, generator=gen).cpu()
            save_image_file(recon[0], args.out / files[0])
            shown.insert(0, recon)
        grid_images = torch.cat(shown)[:GRID_IMAGES]
        save_grid(grid_images, args.out, min(per_row, GRID_ROW))
        report["files"] = files
        report["image_size"] = list(grid_images.shape[-2:])
        report["codes"] = codes_all
    (args.out / "generation.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
