"""The decoder stage's held-out PSNR against its steps: one curve per run, from the runs' own logs.

    python benchmarks/decoder_stage_curve.py --run "1300 steps=runs/exp/dec1300" --run "650 steps, EMA=runs/exp/ema" \
        --out benchmarks/results/decoder-stage-curve

Each run is a decoder-stage (or tokenizer) run trained with `--model.init_args.psnr_steps=N`, so its metrics.csv has
`val/psnr` (validation batches, fixed noise). Where RUN/metrics.json exists (`armkit eval --out RUN/metrics.json`), its
PSNR over the whole eval set is marked at the run's last step. Writes OUT.png (the curves) and OUT.json (the points).
`--x images` puts training images seen (step x the run's batch size, from its saved config.yaml) on the x-axis, so runs
at different batch sizes compare at equal compute.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import print_table, write_json  # noqa: E402


def curve(run: Path) -> tuple[list[tuple[int, float]], int]:
    """(step, val/psnr) of the newest metrics.csv under `run`, and the run's last step; steps as Lightning logs them
    (0-based) plus one."""
    from armkit.recipes.training.summary import metric_curves, newest_metrics_csv

    log = newest_metrics_csv(run)
    if log is None:
        raise FileNotFoundError(f"{run}: no metrics.csv below it")
    curves = metric_curves(log, lambda key: key != "epoch")
    if "val/psnr" not in curves:
        raise ValueError(f"{log}: no val/psnr column (train with --model.init_args.psnr_steps=N)")
    points = [(s + 1, v) for s, v in zip(*curves["val/psnr"])]
    return points, max(max(steps) for steps, _ in curves.values()) + 1


def batch_size(run: Path) -> int:
    """data.batch_size from the config.yaml LightningCLI saved beside the run's newest metrics.csv."""
    import yaml

    from armkit.recipes.training.summary import newest_metrics_csv

    config = newest_metrics_csv(run).parent / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: needed for --x images (the run's batch size)")
    data = yaml.safe_load(config.read_text()).get("data") or {}
    return int((data.get("init_args") or data)["batch_size"])


def final_eval(run: Path) -> dict | None:
    path = run / "metrics.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    m = report.get("metrics", report)
    return {"psnr": m.get("psnr"), "ssim": m.get("ssim"), "count": report.get("protocol", {}).get("limit")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="LABEL=DIR, repeated")
    ap.add_argument("--out", type=Path, required=True, help="OUT.png and OUT.json")
    ap.add_argument("--x", choices=["steps", "images"], default="steps", help="x-axis: steps, or images seen")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result, rows = {"command": " ".join(sys.argv), "runs": {}}, []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in args.run:
        label, _, folder = spec.partition("=")
        (points, last), final = curve(Path(folder)), final_eval(Path(folder))
        scale = batch_size(Path(folder)) if args.x == "images" else None
        result["runs"][label] = {"dir": folder, "val_psnr": points, "last_step": last, "eval": final,
                                 "batch_size": scale}
        line, = ax.plot([s * (scale or 1) for s, _ in points], [v for _, v in points], marker="o", markersize=3,
                        label=f"{label} (val batches)")
        if final and final["psnr"] is not None:
            ax.plot([last * (scale or 1)], [final["psnr"]], marker="*", markersize=12, color=line.get_color(),
                    linestyle="none", label=f"{label}: armkit eval, all {final['count']} held-out")
        rows.append({"run": label, "last_step": last, "val_psnr": f"{points[-1][1]:.2f}",
                     "eval_psnr": "–" if not final else f"{final['psnr']:.2f}"})
    ax.axhline(18.0, color="grey", linestyle=":", linewidth=1, label="issue 13's target, 18 dB")
    ax.set(xlabel="decoder-stage step" if args.x == "steps" else "training images seen (step × batch size)",
           ylabel="held-out PSNR at 32 px (dB)", title=f"The decoder stage, by {args.x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print_table("decoder stage: held-out PSNR (dB)", rows, [("run", "run", "{}"), ("last_step", "last step", "{}"),
                                                             ("val_psnr", "val batches, last", "{}"),
                                                             ("eval_psnr", "armkit eval", "{}")])
    write_json(result, args.out.with_suffix(".json"), announce=True)
    return result


if __name__ == "__main__":
    main()
