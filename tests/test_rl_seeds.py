"""`armkit rl-seeds`: the held-out reward before -> after over seeds, paired by run."""

from __future__ import annotations

import json
import math

import pytest

from armkit.recipes.commands.cli import main as armkit
from armkit.recipes.rl.seeds import summarise


def write_run(root, before: list[float], after: list[float], task: str = "t2i"):
    (root / "samples").mkdir(parents=True)
    for name, values in (("before", before), ("after", after)):
        rows = [{"task": task, "prompt": f"p{i}", "reward": v, "codes": []} for i, v in enumerate(values)]
        (root / "samples" / f"{name}.json").write_text(json.dumps({"step": 0, "samples": rows}))
    return root


def test_paired_difference_interval_and_verdict_by_hand(tmp_path):
    afters = [[0.2, 0.4], [0.22, 0.42], [0.21, 0.41]]
    runs = {f"seed {s}": write_run(tmp_path / str(s), [0.1, 0.3], a) for s, a in enumerate(afters)}
    t = summarise(runs)["tasks"]["t2i"]
    # before 0.2 in every run; after means 0.30, 0.32, 0.31 -> differences 0.10, 0.12, 0.11
    d = t["after_minus_before"]
    assert d["mean"] == pytest.approx(0.11)
    sd = math.sqrt((0.01**2 + 0.01**2 + 0) / 2)  # sample std (n - 1)
    assert d["std"] == pytest.approx(sd)
    half = 4.303 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert d["ci95"] == pytest.approx([0.11 - half, 0.11 + half])
    assert t["verdict_after_gt_before"] == "holds" and t["before"]["std"] == 0


def test_a_spread_that_covers_zero_is_not_established_and_files_are_written(tmp_path):
    a, b = write_run(tmp_path / "a", [0.5], [0.6]), write_run(tmp_path / "b", [0.5], [0.3])
    from PIL import Image

    for name in ("before", "after"):  # SampleGrid's PNGs: one row of 4 32-px images, 2-px gaps
        Image.new("RGB", (2 + 4 * 34, 2 + 34), "gray").save(a / "samples" / f"{name}.png")
    assert armkit(["rl-seeds", f"one={a}", str(b), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert result["tasks"]["t2i"]["verdict_after_gt_before"] == "not established"
    assert set(result["runs"]) == {"one", str(b)}
    assert (tmp_path / "out" / "seeds.png").stat().st_size > 0
    assert Image.open(tmp_path / "out" / "before-after.png").size == (3 * (2 * 138 + 8), 3 * 36)
    assert "| t2i | 2 |" in (tmp_path / "out" / "seeds.md").read_text()


def test_a_run_without_samples_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="before.json"):
        summarise({"x": tmp_path})


def test_class_balanced_reward_exposes_a_drift_to_the_frequent_class(tmp_path):
    # three prompts of class 1 and one of class 0: after RL class 1 rises and class 0 falls
    rows = {"before": [0.2, 0.2, 0.2, 0.6], "after": [0.4, 0.4, 0.4, 0.0]}
    (tmp_path / "samples").mkdir()
    for name, values in rows.items():
        samples = [{"task": "t2i", "prompt": p, "reward": v, "codes": []} for p, v in zip("abcd", values)]
        (tmp_path / "samples" / f"{name}.json").write_text(json.dumps({"samples": samples}))
    r = summarise({"s": tmp_path}, {"a": 1, "b": 1, "c": 1, "d": 0})["per_run"]["s"]
    assert r["before"]["t2i"] == pytest.approx(0.3) and r["after"]["t2i"] == pytest.approx(0.3)
    assert r["before"]["t2i/balanced"] == pytest.approx(0.4) and r["after"]["t2i/balanced"] == pytest.approx(0.2)
    assert r["after"]["t2i/class 0"] == 0.0 and r["after"]["t2i/class 1"] == pytest.approx(0.4)
