"""The ablation's outputs: per variant mean ± std over seeds, paired 95% intervals against the reference row, a verdict
per claim of the paper (table.json; table.md beside the paper's rows; plot.png).

std is the sample standard deviation over seeds (n - 1). Differences are paired by seed (stats.py). A variant's paper
row is found by the kinds of losses it enables (caption, pixel, sigmoid, distill), and only for variants that keep
the recipe's weights. The paper's zero-shot is compared with a head-independent measurement of ours: the teacher's
own zero-shot where every compared run has it, else the linear probe (both per-class, as ImageNet's val set is
balanced); the trained sigmoid head's zero-shot exists only for variants that train that loss.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

from armkit.recipes.evaluation.stats import mean_std, paired, verdict

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
    ("probe_top1_balanced", "probe per-class top-1 %", 1),
    ("teacher_zeroshot_top1_balanced", "teacher zero-shot per-class %", 1),
    ("zeroshot_top1_balanced", "head zero-shot per-class % (trained head only)", 1),
    ("retrieval_i2t_r1", "R@1 img→txt %", 1), ("psnr", "PSNR dB", 2),
    ("ssim", "SSIM", 3), ("lpips", "LPIPS", 3), ("codebook_usage", "usage %", 1),
    ("code_perplexity_normalised", "ppl / size", 3), ("caption_nll", "caption NLL", 3),
    ("feature_cosine", "cos(Z, F)", 3),
    ("ar_probe_nll_bits", "AR probe NLL bits/image (lower better)", 1),
    ("ar_probe_class_accuracy", "AR probe samples judged right %", 1),
]
SEMANTIC = ("teacher_zeroshot_top1_balanced", "probe_top1_balanced")  # our stand-ins for the paper's zero-shot
PAIRED = ("probe_top1_balanced", "teacher_zeroshot_top1_balanced", "psnr", "codebook_usage", "caption_nll",
          "feature_cosine", "ar_probe_nll_bits", "ar_probe_class_accuracy")
# which way is better, for the paired differences' "better" (variant, reference or not established); metrics not
# listed (codebook usage) have no direction
LOWER_IS_BETTER = {"caption_nll", "lpips", "ar_probe_nll_bits", "ar_probe_nll_bits_per_token"}
HIGHER_IS_BETTER = {"probe_top1_balanced", "teacher_zeroshot_top1_balanced", "zeroshot_top1_balanced", "psnr",
                    "ssim", "feature_cosine", "ar_probe_class_accuracy"}
# the paper's claims: (its metric, ours; None = the first of SEMANTIC that every compared run has)
CLAIM_METRICS = (("zeroshot_top1", None), ("psnr", "psnr"), ("codebook_usage", "codebook_usage"))


def numeric(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def class_record(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's zeroshot block (classes, chance, majority) of the first run that records them: runs evaluated
    before every variant recorded them have them only where the sigmoid head trained."""
    return next((z for r in reports if (z := r["protocol"].get("zeroshot") or {}).get("chance_top1") is not None), {})


def summarise(cfg: AblationConfig, reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{variant: {"losses", "kinds", "weights", "seeds", "metrics": {name: mean_std + "by_seed"}, "train_seconds",
    "steps"}}; a metric is summarised over the seeds where it has a value."""
    summary: dict[str, dict[str, Any]] = {}
    for variant in cfg.variants:
        runs = [r for r in reports if r.get("run", {}).get("variant") == variant]
        if not runs:
            continue
        names = sorted({k for r in runs for k, v in r["metrics"].items() if numeric(v) is not None})
        metrics = {}
        for name in names:
            by_seed = {int(r["run"]["seed"]): numeric(r["metrics"].get(name)) for r in runs}
            by_seed = {seed: v for seed, v in by_seed.items() if v is not None}
            metrics[name] = {**mean_std(list(by_seed.values())), "by_seed": by_seed}
        chance = class_record(runs).get("chance_top1")
        summary[variant] = {"losses": cfg.variants[variant], "kinds": cfg.kinds(variant),
                            "weights": cfg.weights.get(variant, {}), "describe": cfg.describe(variant),
                            "chance_top1": chance, "seeds": [r["run"]["seed"] for r in runs], "metrics": metrics,
                            "train_seconds": mean_std([float(r["run"]["train_seconds"]) for r in runs]),
                            "steps": mean_std([float(r["run"].get("global_step") or 0) for r in runs])}
    return summary


def paper_rows(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{variant: the paper's row} for the variants that enable one of the paper's loss sets at the recipe's weights."""
    return {v: PAPER[tuple(s["kinds"])] for v, s in summary.items()
            if tuple(s["kinds"]) in PAPER and not s["weights"]}


def paired_against(summary: dict[str, dict[str, Any]], reference: str | None) -> dict[str, dict[str, Any]]:
    """{variant: {metric: paired(variant, reference)}} for the PAIRED metrics both rows have."""
    if reference not in summary:
        return {}
    ref = summary[reference]["metrics"]
    out = {}
    for variant, s in summary.items():
        if variant == reference:
            continue
        diffs = {m: paired(s["metrics"][m]["by_seed"], ref[m]["by_seed"]) for m in PAIRED
                 if m in s["metrics"] and m in ref}
        out[variant] = {m: {**d, **better(m, d)} for m, d in diffs.items() if d is not None}
    return out


def better(metric: str, diff: dict[str, Any]) -> dict[str, Any]:
    """{"direction": "lower"/"higher", "better": "variant" / "reference" / "not established"} for a metric with a
    direction (variant minus reference: a lower-is-better metric favours the variant when the interval is below 0)."""
    if metric not in LOWER_IS_BETTER | HIGHER_IS_BETTER:
        return {}
    lower = metric in LOWER_IS_BETTER
    ci = diff.get("ci95")
    if ci is None or ci[0] <= 0 <= ci[1]:
        return {"direction": "lower" if lower else "higher", "better": "not established"}
    return {"direction": "lower" if lower else "higher", "better": "variant" if (ci[1] < 0) == lower else "reference"}


def semantic_metric(summary: dict[str, dict[str, Any]], variants: list[str]) -> str | None:
    return next((m for m in SEMANTIC if all(m in summary[v]["metrics"] for v in variants)), None)


def claims(summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One entry per pair of the paper's rows and metric where the paper's values differ: "higher > lower" in the
    paper, our paired difference (higher - lower) with its 95% interval, and the verdict."""
    out = []
    for theirs, ours in CLAIM_METRICS:
        have = [v for v in paper if theirs in paper[v]]
        metric = ours or semantic_metric(summary, have)
        if metric is None:
            continue
        for a, b in combinations(have, 2):
            if paper[a][theirs] == paper[b][theirs] or metric not in summary[a]["metrics"] \
                    or metric not in summary[b]["metrics"]:
                continue
            hi, lo = (a, b) if paper[a][theirs] > paper[b][theirs] else (b, a)
            diff = paired(summary[hi]["metrics"][metric]["by_seed"], summary[lo]["metrics"][metric]["by_seed"])
            out.append({"claim": f"{hi} > {lo}", "higher": hi, "lower": lo, "paper_metric": theirs,
                        "paper": [paper[hi][theirs], paper[lo][theirs]], "metric": metric, "difference": diff,
                        "verdict": verdict(diff)})
    return out


def label(metric: str) -> str:
    return next((lab for key, lab, _ in COLUMNS if key == metric), metric)


def decimals(metric: str) -> int:
    return next((d for key, _, d in COLUMNS if key == metric), 3)


def cell(stats: dict[str, Any] | None, digits: int) -> str:
    if stats is None:
        return "–"
    mean = f"{stats['mean']:.{digits}f}"
    return f"{mean} ± {stats['std']:.{digits}f}" if stats["n"] > 1 else mean


def interval(diff: dict[str, Any] | None, digits: int) -> str:
    """"+1.23 [0.40, 2.06]" (mean difference and its 95% interval), or the mean alone with one paired seed."""
    if diff is None:
        return "–"
    text = f"{diff['mean']:+.{digits}f}"
    if diff["ci95"] is not None:
        text += f" [{diff['ci95'][0]:.{digits}f}, {diff['ci95'][1]:.{digits}f}]"
    return text


def ar_probe_note(probe: dict[str, Any] | None) -> list[str]:
    """The AR probe's setting, a paragraph of the header (nothing when it did not run)."""
    if not probe:
        return []
    return [f"AR probe (ar_probe.py): a random-init Qwen2 of width {probe['width']}, {probe['layers']} layers, "
            f"trained {probe['steps']} steps (batch {probe['batch_size']}; seed: each run's protocol.ar_probe.seed) on "
            f"the codes of {probe['train_count']} `{probe['train_split']}` images, NLL of {probe['val_count']} "
            f"`{probe['val_split']}` images in bits per image (uniform over the codebook: "
            f"{probe['uniform_bits_per_image']:.0f}); it ranks tokenizers by how fast a small AR model learns their "
            "codes, not by gFID.", ""]


def mark(diff: dict[str, Any] | None) -> str:
    return {"variant": " ▲", "reference": " ▼"}.get((diff or {}).get("better"), "")


def render_markdown(cfg: AblationConfig, summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]],
                    reports: list[dict[str, Any]], pairs: dict[str, dict[str, Any]],
                    verdicts: list[dict[str, Any]]) -> str:
    shown = [c for c in COLUMNS if any(c[0] in s["metrics"] for s in summary.values())]
    protocol = reports[0]["protocol"] if reports else {}
    data, zeroshot = protocol.get("data", {}), class_record(reports) or protocol.get("zeroshot") or {}
    budget = f"{cfg.max_steps} steps" if cfg.max_steps is not None else f"{cfg.minutes} min"
    if cfg.max_steps is not None and cfg.minutes is not None:
        budget += f" (at most {cfg.minutes} min)"
    seeds = ", ".join(map(str, cfg.seeds))
    first = reports[0]["metrics"] if reports else {}
    tokens, codes = first.get("tokens_counted", "?"), first.get("codebook_size", "?")
    probe = protocol.get("probe") or {}
    lines = [
        "# Loss ablation", "",
        f"Recipe `{cfg.base}`, each run {budget}, seeds {seeds}; mean ± std over seeds (sample std, n − 1). "
        "Paper: ARM Table 7 (ImageNet, 2.2B training pairs), for the variants it has.", "",
        f"Eval: {data.get('count', '?')} images of `{cfg.eval_data}` (split {protocol.get('split', '?')}, data sha256 "
        f"`{str((data.get('fingerprint') or {}).get('sha256', '?'))[:16]}`), encoded at "
        f"{protocol.get('encoder_image_size')} px, compared at {protocol.get('image_size')} px, decoder "
        f"{protocol.get('sampler', '?')} {protocol.get('steps', '?')} steps guidance {protocol.get('guidance', '?')} "
        f"seed {protocol.get('seed', '?')}; {len(zeroshot.get('classes') or [])} classes (chance "
        f"{zeroshot.get('chance_top1', float('nan')):.1f}%, always the commonest class "
        f"{zeroshot.get('majority_top1', float('nan')):.1f}%). Linear probe on mean-pooled Z: "
        f"{probe.get('train_count', '?')} `{probe.get('split', '?')}` samples, L-BFGS {probe.get('steps', '?')} "
        f"iterations, L2 {probe.get('l2', '?')}. Codebook usage counts {tokens} tokens against {codes} codes "
        f"(ImageNet val at the paper's setting, paper.yaml: 50,000 images x {PAPER_TOKENS_PER_IMAGE:,} tokens "
        f"against {PAPER_CODEBOOK:,} codes), so it is bounded by their ratio. Definitions: any run's metrics.json.", "",
        *ar_probe_note(protocol.get("ar_probe")),
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
        lines.append(f"| {variant} | {s['describe']} | " + " | ".join(cells)
                     + f" | {cell(s['steps'], 0)} | {cell(minutes, 2)} | " + " | ".join(paper_cells) + " |")
    metrics = [m for m in PAIRED if any(m in d for d in pairs.values())]
    lines += ["", f"## Paired differences against `{cfg.reference}`", "",
              "Variant minus reference, seed by seed: mean [95% t interval]; an interval that excludes 0 is an "
              "effect these seeds resolve (marked ▲ where the variant is better, ▼ where it is worse; for NLL and "
              "LPIPS lower is better).", ""]
    if metrics:
        lines += ["| variant | " + " | ".join(label(m) for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for variant, diffs in pairs.items():
            lines.append(f"| {variant} | " + " | ".join(interval(diffs.get(m), decimals(m)) + mark(diffs.get(m))
                                                      for m in metrics) + " |")
    else:
        lines.append("(no other variant shares seeds with the reference yet)")
    lines += ["", "## The paper's claims", "",
              "Each pair of the paper's rows it orders on a metric: our paired difference (paper's higher minus lower) "
              "and the verdict: **holds** (interval above 0), **reversed** (below 0), **not established** (contains 0 "
              "or fewer than 2 seeds).", ""]
    if verdicts:
        lines += ["| claim | paper metric | paper | our metric | ours: difference [95% interval] | verdict |",
                  "|---|---|---|---|---|---|"]
        for c in verdicts:
            lines.append(f"| {c['claim']} | {c['paper_metric']} | {c['paper'][0]:g} vs {c['paper'][1]:g} | "
                         f"{label(c['metric'])} | {interval(c['difference'], decimals(c['metric']))} | "
                         f"{c['verdict']} |")
        counts = {v: sum(c["verdict"] == v for c in verdicts) for v in ("holds", "reversed", "not established")}
        lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(verdicts)} claims."]
    else:
        lines.append("(fewer than two of the paper's variants have results yet)")
    total = sum(s["train_seconds"]["mean"] * s["train_seconds"]["n"] for s in summary.values())
    lines += ["", f"{sum(s['train_seconds']['n'] for s in summary.values())} runs, {total / 60:.1f} min of training "
              f"in all (evaluation not included); device {protocol.get('device', '?')}.", ""]
    return "\n".join(lines)


def write_outputs(out: Path, cfg: AblationConfig, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """table.json, table.md and plot.png in `out`; returns table.json's content."""
    from armkit.recipes.evaluation.plot import plot_summary

    summary = summarise(cfg, reports)
    paper = paper_rows(summary)
    pairs = paired_against(summary, cfg.reference)
    verdicts = claims(summary, paper)
    table = {
        "config": {"path": str(cfg.path), "base": str(cfg.base), "data": cfg.data, "eval_data": cfg.eval_data,
                   "variants": cfg.variants, "weights": cfg.weights, "reference": cfg.reference, "seeds": cfg.seeds,
                   "max_steps": cfg.max_steps, "minutes": cfg.minutes, "train_args": cfg.train_args,
                   "protocol": cfg.protocol.as_dict(), "ar_probe": cfg.ar_probe},
        "std": "sample standard deviation over seeds (n - 1); 0 with one seed",
        "ci95": "mean +- t_{0.975, n-1} * std / sqrt(n) (Student's t); paired differences pair runs by seed",
        "variants": summary, "reference": cfg.reference, "paired": pairs, "paper": paper, "claims": verdicts,
        "versions": reports[0]["protocol"].get("versions") if reports else None,
        "git": reports[0]["protocol"].get("git") if reports else None,
    }
    (out / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "table.md").write_text(render_markdown(cfg, summary, paper, reports, pairs, verdicts))
    plot_summary(summary, paper, pairs, cfg.reference, out / "plot.png")
    return table
