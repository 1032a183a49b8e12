"""The ablation's outputs: mean ± std over seeds per variant (table.json; table.md beside the paper's rows; plot.png).

std is the sample standard deviation over seeds (n - 1 in the denominator; 0 with one seed). A variant's paper row is
found by the kinds of losses it enables (caption, pixel, sigmoid, distill), whatever the variant is called.
"""

from __future__ import annotations

import json
import statistics
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from armkit.recipes.evaluation.ablation import AblationConfig

# ARM (arXiv 2606.11188) Table 7, ImageNet: zero-shot top-1 %, PSNR dB, codebook usage %, perplexity (undefined in the
# paper; below 1, so compared with our normalised one). As reported by third-party reads (see FIELD-NOTES.md).
PAPER = {
    ("caption", "pixel"): {"zeroshot_top1": 0.2, "psnr": 15.2, "codebook_usage": 69.4,
                           "code_perplexity_normalised": 0.21},
    ("caption", "pixel", "sigmoid"): {"zeroshot_top1": 79.4, "psnr": 9.3, "codebook_usage": 70.5},
    ("caption", "distill", "pixel"): {"zeroshot_top1": 58.1, "psnr": 17.1, "codebook_usage": 71.0},
    ("caption", "distill", "pixel", "sigmoid"): {"zeroshot_top1": 80.2, "psnr": 19.6, "codebook_usage": 75.6,
                                                 "code_perplexity_normalised": 0.28},
}
# paper.yaml's teacher (SigLIP2-SO400M, patch 16, at 512 px) gives (512 / 16)^2 tokens per image.
PAPER_TOKENS_PER_IMAGE = (512 // 16) ** 2
PAPER_CODEBOOK = 2 ** 16
COLUMNS = [  # (metric, label, decimals)
    ("zeroshot_top1", "zero-shot top-1 %", 1), ("zeroshot_top1_balanced", "per-class top-1 %", 1),
    ("retrieval_i2t_r1", "R@1 img→txt %", 1), ("psnr", "PSNR dB", 2),
    ("ssim", "SSIM", 3), ("lpips", "LPIPS", 3), ("codebook_usage", "usage %", 1),
    ("code_perplexity_normalised", "ppl / size", 3), ("caption_nll", "caption NLL", 3),
    ("feature_cosine", "cos(Z, F)", 3),
]
# (our metric, the paper's): ImageNet's val set is balanced (50 per class), so its top-1 is our per-class top-1.
DIRECTION_METRICS = (("zeroshot_top1_balanced", "zeroshot_top1"), ("psnr", "psnr"),
                     ("codebook_usage", "codebook_usage"))


def mean_std(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def numeric(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarise(cfg: AblationConfig, reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{variant: {"losses", "kinds", "seeds", "metrics": {name: mean_std}, "train_seconds": mean_std}}."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in cfg.variants:
        runs = [r for r in reports if r.get("run", {}).get("variant") == variant]
        if not runs:
            continue
        names = sorted({k for r in runs for k, v in r["metrics"].items() if numeric(v) is not None})
        metrics = {}
        for name in names:
            values = [numeric(r["metrics"].get(name)) for r in runs]
            if all(v is not None for v in values):
                metrics[name] = mean_std(values)
        chance = (runs[0]["protocol"].get("zeroshot") or {}).get("chance_top1")
        summary[variant] = {"losses": cfg.variants[variant], "kinds": cfg.kinds(variant), "chance_top1": chance,
                            "seeds": [r["run"]["seed"] for r in runs], "metrics": metrics,
                            "train_seconds": mean_std([float(r["run"]["train_seconds"]) for r in runs]),
                            "steps": mean_std([float(r["run"].get("global_step") or 0) for r in runs])}
    return summary


def paper_rows(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {v: PAPER[tuple(s["kinds"])] for v, s in summary.items() if tuple(s["kinds"]) in PAPER}


def direction(summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]]) -> list[str]:
    """One line per metric: the paper's order of the variants it has, ours, and how many pairs agree."""
    lines = []
    for metric, theirs_key in DIRECTION_METRICS:
        have = [v for v in paper if theirs_key in paper[v] and metric in summary[v]["metrics"]]
        if len(have) < 2:
            continue
        ours = {v: summary[v]["metrics"][metric] for v in have}
        ref = {v: paper[v][theirs_key] for v in have}
        paper_order = sorted(have, key=lambda v: -ref[v])
        our_order = sorted(have, key=lambda v: -ours[v]["mean"])
        agree = tied = noise = pairs = 0
        for a, b in combinations(have, 2):
            if ref[a] == ref[b]:
                continue
            pairs += 1
            hi, lo = (a, b) if ref[a] > ref[b] else (b, a)
            diff = ours[hi]["mean"] - ours[lo]["mean"]
            agree += diff > 0
            tied += diff == 0
            noise += abs(diff) <= ours[hi]["std"] + ours[lo]["std"] and (ours[hi]["n"] > 1 or ours[lo]["n"] > 1)
        theirs = " > ".join(f"{v} ({ref[v]:g})" for v in paper_order)
        digits = decimals(metric)
        mine = f"{our_order[0]} ({ours[our_order[0]]['mean']:.{digits}f})"
        for before, v in zip(our_order, our_order[1:]):
            sign = "=" if ours[v]["mean"] == ours[before]["mean"] else ">"
            mine += f" {sign} {v} ({ours[v]['mean']:.{digits}f})"
        within = f"; {tied} tied" if tied else ""
        within += f"; {noise} of the {pairs} differences within the two stds summed" if noise else ""
        lines.append(f"- {label(metric)}: paper {theirs}; ours {mine}: {agree} of {pairs} pairs in the paper's "
                     f"order{within}")
    return lines


def label(metric: str) -> str:
    return next((lab for key, lab, _ in COLUMNS if key == metric), metric)


def decimals(metric: str) -> int:
    return next((d for key, _, d in COLUMNS if key == metric), 3)


def cell(stats: dict[str, Any] | None, digits: int) -> str:
    if stats is None:
        return "–"
    mean = f"{stats['mean']:.{digits}f}"
    return f"{mean} ± {stats['std']:.{digits}f}" if stats["n"] > 1 else mean


def render_markdown(cfg: AblationConfig, summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]],
                    reports: list[dict[str, Any]]) -> str:
    shown = [c for c in COLUMNS if any(c[0] in s["metrics"] for s in summary.values())]
    protocol = reports[0]["protocol"] if reports else {}
    data, zeroshot = protocol.get("data", {}), protocol.get("zeroshot") or {}
    budget = f"{cfg.max_steps} steps" if cfg.max_steps is not None else f"{cfg.minutes} min"
    if cfg.max_steps is not None and cfg.minutes is not None:
        budget += f" (at most {cfg.minutes} min)"
    seeds = ", ".join(map(str, cfg.seeds))
    first = reports[0]["metrics"] if reports else {}
    tokens, codes = first.get("tokens_counted", "?"), first.get("codebook_size", "?")
    lines = [
        "# Loss ablation", "",
        f"Recipe `{cfg.base}`, each run {budget}, seeds {seeds}; mean ± std over seeds (n − 1; one value when "
        "one seed). Paper: ARM Table 7 (ImageNet, 2.2B training pairs), for the variants it has.", "",
        f"Eval: {data.get('count', '?')} images of `{cfg.eval_data}` (split {protocol.get('split', '?')}, data sha256 "
        f"`{str((data.get('fingerprint') or {}).get('sha256', '?'))[:16]}`), compared at {protocol.get('image_size')}"
        f" px, decoder {protocol.get('sampler', '?')} {protocol.get('steps', '?')} steps guidance "
        f"{protocol.get('guidance', '?')} seed {protocol.get('seed', '?')}; zero-shot over "
        f"{len(zeroshot.get('classes') or [])} classes (chance "
        f"{zeroshot.get('chance_top1', float('nan')):.1f}%, always the commonest class "
        f"{zeroshot.get('majority_top1', float('nan')):.1f}%). Codebook usage counts "
        f"{tokens} tokens against {codes} codes (ImageNet val at the paper's setting, paper.yaml: 50,000 images x "
        f"{PAPER_TOKENS_PER_IMAGE:,} tokens against {PAPER_CODEBOOK:,} codes), so it is "
        "bounded by their ratio. Definitions: any run's metrics.json.", "",
        "| variant | losses | " + " | ".join(lab for _, lab, _ in shown)
        + " | steps | train min | paper zero-shot | paper PSNR | paper usage | paper ppl |",
        "|---|---|" + "---|" * len(shown) + "---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        row = paper.get(variant, {})
        cells = [cell(s["metrics"].get(key), d) for key, _, d in shown]
        minutes = {**s["train_seconds"], "mean": s["train_seconds"]["mean"] / 60, "std": s["train_seconds"]["std"] / 60}
        paper_cells = [f"{row[k]:g}" if k in row else "–"
                       for k in ("zeroshot_top1", "psnr", "codebook_usage", "code_perplexity_normalised")]
        lines.append(f"| {variant} | {' + '.join(s['kinds'])} | " + " | ".join(cells)
                     + f" | {cell(s['steps'], 0)} | {cell(minutes, 2)} | " + " | ".join(paper_cells) + " |")
    lines += ["", "## Direction against the paper", ""]
    lines += direction(summary, paper) or ["(fewer than two of the paper's variants have results yet)"]
    total = sum(s["train_seconds"]["mean"] * s["train_seconds"]["n"] for s in summary.values())
    lines += ["", f"{sum(s['train_seconds']['n'] for s in summary.values())} runs, {total / 60:.1f} min of training "
              f"in all (evaluation not included); device {protocol.get('device', '?')}.", ""]
    return "\n".join(lines)


def write_outputs(out: Path, cfg: AblationConfig, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """table.json, table.md and plot.png in `out`; returns table.json's content."""
    from armkit.recipes.evaluation.plot import plot_summary

    summary = summarise(cfg, reports)
    paper = paper_rows(summary)
    table = {
        "config": {"path": str(cfg.path), "base": str(cfg.base), "data": cfg.data, "eval_data": cfg.eval_data,
                   "variants": cfg.variants, "seeds": cfg.seeds, "max_steps": cfg.max_steps, "minutes": cfg.minutes,
                   "train_args": cfg.train_args, "protocol": cfg.protocol.as_dict()},
        "std": "sample standard deviation over seeds (n - 1); 0 with one seed",
        "variants": summary, "paper": paper, "direction": direction(summary, paper),
        "versions": reports[0]["protocol"].get("versions") if reports else None,
        "git": reports[0]["protocol"].get("git") if reports else None,
    }
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "table.md").write_text(render_markdown(cfg, summary, paper, reports))
    plot_summary(summary, paper, out / "plot.png")
    return table
