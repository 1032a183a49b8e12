"""summary.png: one picture of a training run, its loss curves beside its last reconstruction grid.

Reads the run's CSV log (`metrics.csv` of Lightning's CSVLogger) and the grid PNG the `ReconstructionGrid` callback
wrote. matplotlib with the Agg backend, so it runs without a display.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path


def newest_metrics_csv(run: Path) -> Path | None:
    """The most recently written `metrics.csv` below a run folder (CSVLogger writes one per version), or None."""
    logs = sorted(Path(run).rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def metric_curves(metrics_csv: Path, keep: Callable[[str], bool]) -> dict[str, tuple[list[int], list[float]]]:
    """{name: (steps, values)} for every column `keep(name)` accepts that has at least one value; steps as logged."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    if not Path(metrics_csv).is_file():  # the logger writes it on its first logged step
        return curves
    with Path(metrics_csv).open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key != "step" and keep(key) and value not in ("", None):
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(int(row["step"]))
                    values.append(float(value))
    return curves


def loss_curves(metrics_csv: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{name: (steps, values)} for every `train/loss/*` and `val/loss/*` column with at least one value."""
    return metric_curves(metrics_csv, lambda key: "/loss/" in key)


def write_summary(metrics_csv: Path | list[Path], grid_png: Path | None, out: Path, *, title: str = "") -> Path:
    """Loss curves (one panel per loss, train and val) on the left, the reconstruction grid on the right.
    Several CSVs (the stages of one demo) are read in order; each stage logs its own loss names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for path in metrics_csv if isinstance(metrics_csv, list) else [metrics_csv]:
        curves.update(loss_curves(path))
    names = sorted({k.split("/loss/")[1] for k in curves}) or ["(none logged yet)"]
    rows = (len(names) + 1) // 2
    fig = plt.figure(figsize=(16, max(4.0, 2.6 * rows)), constrained_layout=True)
    spec = fig.add_gridspec(rows, 4 if grid_png else 2)
    for i, name in enumerate(names):
        ax = fig.add_subplot(spec[i // 2, i % 2])
        for split, style in (("train", "-"), ("val", "--")):
            if f"{split}/loss/{name}" in curves:
                steps, values = curves[f"{split}/loss/{name}"]
                ax.plot(steps, values, style, marker="o" if len(steps) < 20 else None, markersize=3, label=split)
        ax.set_title(f"loss: {name}", fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if grid_png:
        ax = fig.add_subplot(spec[:, 2:])
        ax.imshow(plt.imread(str(grid_png)), interpolation="nearest")
        ax.set_title("held-out: input | decode (pairs, left to right)", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
