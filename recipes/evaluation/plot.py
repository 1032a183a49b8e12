"""plot.png: the ablation at a glance, with the intervals that decide it.

Rows 1-2: one panel per main metric, a bar per variant (the mean over seeds), each seed as a dot, the error bar the
mean's 95% t interval (none with one seed), the paper's value as a black diamond where it reports one. Row 3: each
variant minus the reference, paired by seed, with its 95% interval and the zero line: a whisker that crosses zero is
an effect these seeds do not resolve. matplotlib with the Agg backend, so it runs without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PANELS = [("probe_top1_balanced", "linear probe per-class top-1 %"),
          ("teacher_zeroshot_top1_balanced", "teacher zero-shot per-class %"),
          ("zeroshot_top1_balanced", "head zero-shot per-class % (trained head only)"),
          ("psnr", "PSNR dB"), ("codebook_usage", "codebook usage %"), ("caption_nll", "caption NLL (nats/token)")]
DIFF_PANELS = [("probe_top1_balanced", "Δ probe per-class top-1 (points)"), ("psnr", "Δ PSNR dB"),
               ("codebook_usage", "Δ codebook usage (points)")]
AR_PANELS = [("ar_probe_nll_bits", "AR probe NLL bits/image (lower is better)"),
             ("ar_probe_class_accuracy", "AR probe samples judged right %")]  # replace the last panels when present
AR_DIFF = ("ar_probe_nll_bits", "Δ AR probe NLL bits/image (below 0: variant better)")  # replaces Δ usage
PAPER_KEYS = {"zeroshot_top1_balanced": "zeroshot_top1", "teacher_zeroshot_top1_balanced": "zeroshot_top1",
              "probe_top1_balanced": "zeroshot_top1"}  # the paper's zero-shot, the nearest of ours


def ci_err(stats: dict[str, Any] | None) -> tuple[float, float]:
    """(below, above) the mean for a matplotlib error bar: the 95% interval, or nothing."""
    if not stats or stats.get("ci95") is None:
        return 0.0, 0.0
    return stats["mean"] - stats["ci95"][0], stats["ci95"][1] - stats["mean"]


def plot_summary(summary: dict[str, dict[str, Any]], paper: dict[str, dict[str, float]],
                 pairs: dict[str, dict[str, Any]], reference: str | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(summary)
    ar = [p for p in AR_PANELS if any(p[0] in s["metrics"] for s in summary.values())]
    panels = [p for p in PANELS if any(p[0] in s["metrics"] for s in summary.values())][:6 - len(ar)] + ar
    diff_panels = DIFF_PANELS[:2] + [AR_DIFF] if ar and ar[0] == AR_PANELS[0] else DIFF_PANELS
    fig, axes = plt.subplots(3, 3, figsize=(14, 11), constrained_layout=True)
    xs = list(range(len(variants)))
    for ax, (metric, title) in zip(axes.flat[:6], panels):
        stats = [summary[v]["metrics"].get(metric) for v in variants]
        means = [s["mean"] if s else 0.0 for s in stats]
        errs = [ci_err(s) for s in stats]
        ax.bar(xs, means, yerr=[[e[0] for e in errs], [e[1] for e in errs]], capsize=4, color="#4c72b0",
               alpha=0.85, label="mean, 95% interval")
        for i, s in enumerate(stats):
            if s is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7)
            else:
                ax.scatter([i] * len(s["values"]), s["values"], color="#dd8452", s=12, zorder=3)
        theirs = PAPER_KEYS.get(metric, metric)
        marks = [(i, paper[v][theirs]) for i, v in enumerate(variants) if theirs in paper.get(v, {})]
        if marks:
            ax.scatter([i for i, _ in marks], [y for _, y in marks], color="black", marker="D", zorder=4,
                       label="paper zero-shot (ImageNet)" if metric in PAPER_KEYS else "paper (ImageNet)")
        chance = next((s.get("chance_top1") for s in summary.values() if s.get("chance_top1")), None)
        if metric in PAPER_KEYS and chance:
            ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(xs, variants, rotation=30, ha="right", fontsize=8)
    for ax in axes.flat[len(panels):6]:
        ax.axis("off")
    others = [v for v in variants if v in pairs]
    for ax, (metric, title) in zip(axes.flat[6:], diff_panels):
        diffs = [pairs[v].get(metric) for v in others]
        shown = [(i, d) for i, d in enumerate(diffs) if d is not None]
        if shown:
            ax.errorbar([i for i, _ in shown], [d["mean"] for _, d in shown],
                        yerr=[[ci_err(d)[0] for _, d in shown], [ci_err(d)[1] for _, d in shown]],
                        fmt="o", capsize=5, color="#4c72b0")
        ax.axhline(0.0, color="black", linewidth=1)
        ax.set_title(f"{title}: variant − {reference}, paired", fontsize=10)
        ax.set_xticks(list(range(len(others))), others, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.5, max(len(others), 1) - 0.5)
    seeds = max((s["train_seconds"]["n"] for s in summary.values()), default=0)
    fig.suptitle(f"armkit loss ablation: means over {seeds} seed(s), dots = seeds, error bars = 95% t intervals",
                 fontsize=11)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
