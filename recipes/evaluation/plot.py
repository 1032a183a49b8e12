"""plot.png: one bar chart per main metric, a bar per variant (mean, error bar = std over seeds), the paper's value as
a black marker where it reports one. matplotlib with the Agg backend, so it runs without a display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = [("zeroshot_top1_balanced", "zero-shot per-class top-1 %"), ("retrieval_i2t_r1", "R@1 image→text %"),
          ("psnr", "PSNR dB"), ("ssim", "SSIM"), ("codebook_usage", "codebook usage %"),
          ("caption_nll", "caption NLL (nats/token)")]
PAPER_KEYS = {"zeroshot_top1_balanced": "zeroshot_top1"}  # ImageNet's val set is balanced: its top-1 is per-class


def plot_summary(summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(summary)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (metric, title) in zip(axes.flat, PANELS):
        stats = [summary[v]["metrics"].get(metric) for v in variants]
        means = [s["mean"] if s else 0.0 for s in stats]
        stds = [s["std"] if s else 0.0 for s in stats]
        xs = range(len(variants))
        ax.bar(xs, means, yerr=stds, capsize=3, color="#4c72b0")
        theirs = PAPER_KEYS.get(metric, metric)
        marks = [(i, paper[v][theirs]) for i, v in enumerate(variants) if theirs in paper.get(v, {})]
        if marks:
            ax.scatter([i for i, _ in marks], [y for _, y in marks], color="black", marker="D", zorder=3,
                       label="paper (ImageNet)")
            ax.legend(fontsize=7, loc="best")
        chance = next((s.get("chance_top1") for s in summary.values() if s.get("chance_top1")), None)
        if metric == "zeroshot_top1_balanced" and chance:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=7, loc="best")
        for i, s in enumerate(stats):
            if s is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(list(xs), variants, rotation=30, ha="right", fontsize=8)
    seeds = max((s["train_seconds"]["n"] for s in summary.values()), default=0)
    fig.suptitle(f"armkit loss ablation: mean ± std over {seeds} seed(s)", fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
