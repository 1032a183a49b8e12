"""The work behind `armkit generate`: text-to-image, editing and captioning with a trained AR model, rendered by its
tokenizer.

The command's arguments and its full description are in recipes/commands/generate.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from armkit.backbones import sequence as S
from armkit.backbones.generate import Sampling, generate_image, generate_text
from armkit.recipes.autoregressive.codes import check_fingerprint, tokenizer_fingerprint
from armkit.recipes.autoregressive.export import load_ar


def load_tokenizer(record: dict[str, Any], override: Path | None):
    """The codes' tokenizer, checked against the fingerprint the AR model was trained with."""
    from armkit.tokenizer import Tokenizer

    path = override or Path(record.get("path", ""))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"tokenizer export {path} not found; pass --tokenizer")
    check_fingerprint(record.get("fingerprint", "?"), tokenizer_fingerprint(path), expected_from="the AR model",
                      got_from=f"--tokenizer {path}")
    return Tokenizer.from_pretrained(path)


def read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    from armkit.recipes.data.reader import image_tensor

    with Image.open(path) as img:
        return image_tensor(img, size)[None]  # [1, 3, S, S]


def save_images(images: torch.Tensor, out: Path, per_row: int, *, min_size: int = 96) -> list[str]:
    """One PNG per sample at the decoder's size, and grid.png with each sample enlarged by nearest neighbour (each
    pixel a square block) to at least `min_size` px, so 32-px samples can be judged."""
    from torchvision.utils import make_grid, save_image

    names = []
    for i, img in enumerate(images):
        names.append(f"{i:03d}.png")
        save_image(img, out / names[-1])
    factor = -(-min_size // min(images.shape[-2:]))  # ceil: the smallest whole factor reaching min_size
    shown = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest") if factor > 1 \
        else images
    save_image(make_grid(shown, nrow=per_row, padding=4, pad_value=1.0), out / "grid.png")
    return names


@torch.no_grad()
def generate(args: argparse.Namespace) -> dict[str, Any]:
    modes = [bool(args.prompt), bool(args.image and args.instruction), bool(args.image and args.caption)]
    if sum(modes) != 1:
        raise ValueError("give --prompt (text-to-image), or --image with --instruction (editing) or --caption")
    model, record = load_ar(args.model)
    model.to(args.device)
    tok = load_tokenizer(record, args.tokenizer).to(args.device)
    v, codec, grid = model.vocab, model.codec, tuple(tok.grid)
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"model": str(args.model), "tokenizer": record.get("fingerprint"), "grid": list(grid),
                              "sampling": sampling._asdict(), "seed": args.seed, "kv_cache": not args.no_cache}
    source = None
    if args.image:
        source = tok.encode(read_image(args.image, tok.encoder.image_size[0]).to(args.device))[0].tolist()
    if args.caption:
        ids = generate_text(model, [S.understanding_prompt(v, source, grid)], max_new_tokens=args.max_new_tokens,
                            sampling=sampling if args.temperature > 0 else Sampling(0.0), generator=gen,
                            use_cache=not args.no_cache)
        report["captions"] = [codec.decode(ids[0])]
        (args.out / "caption.txt").write_text(report["captions"][0] + "\n")
    else:
        if args.prompt:
            texts = [p for p in args.prompt for _ in range(args.num)]
            cond = [S.text_to_image_prompt(v, codec.encode(t), grid) for t in texts]
            weaker = [[S.text_to_image_prompt(v, [], grid)] * len(cond)]
            scales = [args.guidance]
            report.update(mode="text-to-image", prompts=args.prompt, guidance=args.guidance)
        else:
            instr = codec.encode(args.instruction)
            cond = [S.editing_prompt(v, source, grid, instr, grid)] * args.num
            weaker = [[S.editing_prompt(v, source, grid, instr, grid, drop_text=True)] * args.num,
                      [S.editing_prompt(v, source, grid, instr, grid, drop_text=True, drop_image=True)] * args.num]
            scales = [args.guidance, args.image_guidance]
            report.update(mode="editing", instruction=args.instruction, image=str(args.image),
                          guidance=args.guidance, image_guidance=args.image_guidance)
        codes = generate_image(model, cond, grid, weaker=weaker, scales=scales, sampling=sampling, generator=gen,
                               use_cache=not args.no_cache)
        images = tok.decode(codes, steps=args.steps, generator=gen)  # [B, 3, H, W] in [0, 1]
        if source is not None:  # editing: the source's own reconstruction first, for comparison
            images = torch.cat([tok.decode(torch.tensor([source], device=args.device), steps=args.steps,
                                           generator=gen), images])
        report["files"] = save_images(images.cpu(), args.out, per_row=len(images) if source is not None else args.num)
        report["image_size"] = list(images.shape[-2:])
        report["codes"] = codes.tolist()
    (args.out / "generation.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
