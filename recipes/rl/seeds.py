"""The held-out reward of GRPO runs over seeds: did RL lift it above the SFT model's, beyond the spread of seeds?

    armkit rl-seeds "seed 0=runs/rl/seed0/t2i/run" "seed 1=runs/rl/seed1/t2i/run" ... --out DIR

Each run is a GRPO run folder (its trainer.default_root_dir) with `SampleGrid`'s samples/before.json and after.json:
the same held-out prompts and the same draws scored before the first update (the SFT model) and after the last.
Per task: each run's mean reward before and after; over runs, the mean and std of both and the 95% t interval of
the paired difference after - before, with the verdict of "after > before" (`recipes/evaluation/stats.py`: holds,
reversed, not established). Writes DIR/seeds.json, DIR/seeds.md and DIR/seeds.png (each run's before -> after, and
its `val/reward/*` curve from metrics.csv), and DIR/before-after.png: the first run's held-out samples before | after.

With --prompt-classes (the {prompt: class} file of a `CategoryProbe`), each task is also scored class-balanced (the
mean over classes of each class's mean reward), with the per-class means beside it: a policy that drifts towards the
most frequent class of the held-out prompts raises the plain mean without following its prompts, and this shows it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from armkit.recipes.evaluation.stats import mean_std, paired, verdict
from armkit.recipes.training.summary import metric_curves, newest_metrics_csv


def rewards(run: Path, name: str, classes: dict[str, int] | None = None) -> dict[str, float]:
    """{task: mean reward} in RUN/samples/<name>.json; with `classes` ({prompt: class}) also
    {"<task>/balanced": mean over classes of the class means, "<task>/class <c>": each class's mean}."""
    path = run / "samples" / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not written (SampleGrid in the run's callbacks writes it)")
    rows = json.loads(path.read_text())["samples"]
    out = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        out[task] = statistics.fmean(r["reward"] for r in mine)
        if classes is not None:
            by: dict[int, list[float]] = {}
            for r in mine:
                by.setdefault(int(classes.get(r["prompt"], -1)), []).append(r["reward"])
            means = {c: statistics.fmean(v) for c, v in sorted(by.items())}
            out[f"{task}/balanced"] = statistics.fmean(means.values())
            out.update({f"{task}/class {c}": m for c, m in means.items()})
    return out


def val_curve(run: Path) -> dict[str, list[tuple[int, float]]]:
    """{task: [(optimizer step, val/reward/task)]} from the run's newest metrics.csv ({} when it has none)."""
    log = newest_metrics_csv(run)
    curves = metric_curves(log, lambda key: key.startswith("val/reward/")) if log else {}
    return {key[len("val/reward/"):]: [(s + 1, v) for s, v in zip(*curve)] for key, curve in curves.items()}


def summarise(runs: dict[str, Path], classes: dict[str, int] | None = None) -> dict[str, Any]:
    per_run = {label: {"before": rewards(run, "before", classes), "after": rewards(run, "after", classes),
                       "val": val_curve(run)} for label, run in runs.items()}
    tasks = sorted({t for r in per_run.values() for t in r["after"] if "/class " not in t})
    summary = {}
    for task in tasks:
        labels = [k for k, r in per_run.items() if task in r["before"] and task in r["after"]]
        index = {k: i for i, k in enumerate(labels)}  # pairs by run
        before = {index[k]: per_run[k]["before"][task] for k in labels}
        after = {index[k]: per_run[k]["after"][task] for k in labels}
        diff = paired(after, before)
        summary[task] = {"runs": labels, "before": mean_std(list(before.values())),
                         "after": mean_std(list(after.values())), "after_minus_before": diff,
                         "verdict_after_gt_before": verdict(diff)}
    return {"runs": {k: str(v) for k, v in runs.items()}, "per_run": per_run, "tasks": summary}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| task | runs | held-out reward before (SFT) | after GRPO | after − before, 95 % interval | verdict |",
             "|---|---|---|---|---|---|"]
    for task, s in result["tasks"].items():
        d = s["after_minus_before"]
        ci = "–" if d is None or d["ci95"] is None else f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        lines.append(f"| {task} | {len(s['runs'])} | {s['before']['mean']:.4f} ± {s['before']['std']:.4f} | "
                     f"{s['after']['mean']:.4f} ± {s['after']['std']:.4f} | "
                     f"{'–' if d is None else format(d['mean'], '+.4f')} {ci} | {s['verdict_after_gt_before']} |")
    lines += ["", "| run | task | before | after |", "|---|---|---|---|"]
    for label, r in result["per_run"].items():
        lines += [f"| {label} | {t} | {r['before'].get(t, float('nan')):.4f} | {v:.4f} |"
                  for t, v in r["after"].items()]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in result["tasks"] if "/" not in t]
    fig, axes = plt.subplots(1, 2 * len(tasks), figsize=(6 * len(tasks), 3.6), squeeze=False)
    for i, task in enumerate(tasks):
        left, right = axes[0, 2 * i], axes[0, 2 * i + 1]
        for label, r in result["per_run"].items():
            if task in r["after"]:
                line, = left.plot([0, 1], [r["before"][task], r["after"][task]], marker="o", label=label)
                if task in r["val"]:
                    right.plot(*zip(*r["val"][task]), marker=".", color=line.get_color(), label=label)
        left.set(xticks=[0, 1], xticklabels=["SFT (before)", "after GRPO"], ylabel="held-out reward",
                 title=f"{task}: SampleGrid's held-out prompts")
        right.set(xlabel="optimizer step", ylabel="val/reward", title=f"{task}: validation prompts during RL")
        for ax in (left, right):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # the right panel is empty when the runs logged no val reward
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def before_after(run: Path, path: Path, *, rows: int = 8, cell: int = 32, pad: int = 2, scale: int = 3) -> Path:
    """The first `rows` prompts of RUN/samples/before.png and after.png (SampleGrid: one row per prompt, `cell`-px
    images, `pad`-px gaps) side by side, enlarged `scale`× with nearest neighbour."""
    from PIL import Image

    before, after = (Image.open(run / "samples" / f"{n}.png").convert("RGB") for n in ("before", "after"))
    height = min(before.height, pad + rows * (cell + pad))
    crops = [im.crop((0, 0, im.width, height)) for im in (before, after)]
    canvas = Image.new("RGB", (crops[0].width + crops[1].width + 4 * pad, height), "white")
    canvas.paste(crops[0], (0, 0))
    canvas.paste(crops[1], (crops[0].width + 4 * pad, 0))
    canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST).save(path)
    return path
