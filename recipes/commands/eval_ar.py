"""`armkit eval-ar --model M --codes CODES --images SHARDS --out metrics.json`: evaluate an AR model offline.

Fréchet distance and probe accuracy of generated images, caption NLL and accuracy, and edit distances, with the
protocol written beside them; the metrics are defined in recipes/ar/evaluate.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="AR export folder or checkpoint")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer export (default: the one the model records)")
    parser.add_argument("--codes", required=True, help="code shard folder (its val split is evaluated)")
    parser.add_argument("--images", required=True, help="image shard folder the codes came from")
    parser.add_argument("--features", default="asset:efficientnet_lite0",
                        help="weights of the feature network (default: EfficientNet-Lite0 from `armkit assets`)")
    parser.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=1.5)


def run(args: argparse.Namespace) -> int:
    from armkit.recipes.ar.codes import CodesMetaError, FingerprintError, read_meta
    from armkit.recipes.ar.evaluate import PretrainedFeatures, evaluate_ar  # here: --help stays light
    from armkit.recipes.ar.export import load_ar
    from armkit.recipes.ar.generation import load_tokenizer
    from armkit.tokenizer.hub import ExportError

    try:  # a bad export, checkpoint or codes folder, or another tokenizer: one line naming the file and the key
        if args.limit < 1 or args.steps < 1:
            raise ValueError(f"--limit {args.limit} / --steps {args.steps}: both must be >= 1")
        model, record = load_ar(args.model)
        tok = load_tokenizer(record, args.tokenizer)
        read_meta(args.codes)  # the codes' meta.json, checked before the evaluation starts
    except (ExportError, FingerprintError, CodesMetaError, FileNotFoundError, ValueError) as e:
        print(f"armkit eval-ar: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    features = PretrainedFeatures(weights=args.features)
    result = evaluate_ar(model=model, tok=tok, codes=args.codes, images=args.images, features=features,
                         limit=args.limit, steps=args.steps, seed=args.seed, guidance=args.guidance)
    result["protocol"].update(model=str(args.model), tokenizer=record.get("fingerprint"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=1, default=float))
    return 0
