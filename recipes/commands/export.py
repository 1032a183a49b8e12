"""`armkit export --ckpt CKPT --out DIR`: a training checkpoint -> a self-contained tokenizer folder.

The folder (config.json, model.safetensors, optional heads.safetensors, README.md, optional torch.export/ONNX
programs) loads with `Tokenizer.from_pretrained(DIR)` in any codebase with torch, safetensors and the encoder's
library; see tokenizer/hub.py. The checkpoint is read with torch.load(weights_only=True): it holds the specs as
plain JSON (`checkpoint["armkit"]`, written by TokenizerModule) and the tensors, so nothing is unpickled and
lightning is not imported. The model card takes the training data from the run's config.yaml, metrics from an eval
metrics.json next to the checkpoint (or --metrics), and licences from an `armkit assets` cache's assets.json when
the weights live there. The work is done in recipes/tokenizer/export.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, type=Path, help="a checkpoint written by `armkit train`")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--encoder", choices=("include", "reference"), default="include",
                        help="include the frozen encoder's weights, or reference its weights file by path and sha256")
    parser.add_argument("--metrics", type=Path, help="an eval metrics.json (default: one next to the checkpoint)")
    parser.add_argument("--data", help="training data description for the model card (default: the run's config)")
    parser.add_argument("--no-heads", action="store_true", help="do not export the trained loss heads")
    parser.add_argument("--graphs", action="store_true",
                        help="also write encode/embed/decode as torch.export programs (.pt2; and .onnx when onnx is "
                             "installed), dynamic batch, each checked against eager mode")
    parser.add_argument("--decode-steps", type=int, default=25, help="sampler steps baked into decode.pt2")
    parser.add_argument("--no-onnx", action="store_true", help="with --graphs: write the .pt2 programs only")
    parser.add_argument("--allow-path", action="append", type=Path, metavar="DIR",
                        help="a folder outside the checkpoint's own whose files its specs may name (the encoder's "
                             "weights, a frozen text tower or LM); repeatable. Nothing else is followed")
    parser.add_argument("--hf", action="store_true",
                        help="AR model (checkpoint or AR export folder as --ckpt), full head only: write a standard "
                             "Hugging Face causal-LM folder that AutoModelForCausalLM loads without armkit, with "
                             "armkit_sequence.json (recipes/ar/hf_export.py)")


def run(args: argparse.Namespace) -> int:
    from armkit.common.buildable import ConfigError  # imported here: `armkit export --help` must not import torch
    from armkit.recipes.ar.export import export_ar_checkpoint, is_ar_checkpoint
    from armkit.recipes.tokenizer.export import export_checkpoint
    from armkit.tokenizer.graphs import GraphError
    from armkit.tokenizer.hub import ExportError

    if args.hf:  # the standard Hugging Face folder of an AR model (recipes/ar/hf_export.py)
        from armkit.recipes.ar.hf_export import export_ar_hf

        try:
            out = export_ar_hf(args.ckpt, args.out)
        except (ExportError, ConfigError) as e:
            print(f"armkit export --hf: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        print(f"exported AR model {args.ckpt} -> {out} (Hugging Face causal LM): "
              f"{', '.join(sorted(p.name for p in out.iterdir()))}")
        return 0
    if args.ckpt.is_file() and is_ar_checkpoint(args.ckpt):  # an AR model (ARModule) rather than a tokenizer
        try:
            out = export_ar_checkpoint(args.ckpt, args.out)
        except (ExportError, ConfigError) as e:  # one line naming the file and the key (recipes/ar/export_checks.py)
            print(f"armkit export: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        print(f"exported AR model {args.ckpt} -> {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
        return 0
    graphs = {"steps": args.decode_steps, "onnx": False if args.no_onnx else None} if args.graphs else False
    try:
        out = export_checkpoint(args.ckpt, args.out, include_encoder=args.encoder == "include", metrics=args.metrics,
                                data=args.data, heads=not args.no_heads, graphs=graphs,
                                paths=args.allow_path or ())
    except (ExportError, ConfigError, FileNotFoundError, GraphError) as e:
        print(f"armkit export: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.ckpt} -> {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0
