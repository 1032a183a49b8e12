"""recipes/rl/fmnist.yaml (GRPO on the Fashion-MNIST SFT model), `armkit rl-probe --pixels` and the seeds summary of
benchmarks/ar_demo_grpo.py: the recipe matches the AR model it starts from, the pixel probe is usable, the paired
intervals are stats.py's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from armkit.recipes.commands.cli import main
from armkit.recipes.evaluation.stats import t975
from benchmarks import ar_demo_grpo as grpo

ROOT = Path(__file__).resolve().parents[1]


def test_fmnist_rl_recipe_matches_the_ar_model_it_starts_from():
    rl = yaml.safe_load((ROOT / "recipes" / "rl" / "fmnist.yaml").read_text())
    ar = yaml.safe_load((ROOT / "recipes" / "ar" / "fmnist.yaml").read_text())
    policy = rl["model"]["init_args"]
    assert rl["model"]["class_path"] == "armkit.recipes.rl.module.GRPOModule"
    assert policy["model"] == ar["model"]["init_args"]["model"]  # init_from loads the SFT weights strictly
    assert policy["max_text"] == ar["model"]["init_args"]["max_text"]
    assert rl["data"]["class_path"] == ar["data"]["class_path"]
    # rewards without a network: neither uses the SmallCNN judge (or any network) the evaluation reports
    reward, edit = policy["reward"], policy["edit_reward"]
    assert reward["class_path"].endswith("offline.CategoryProbe") and edit["class_path"].endswith("offline.EditReward")
    for r in (reward, edit):
        assert r["init_args"]["image_encoder"]["class_path"] == "armkit.recipes.rl.offline.PixelFeatures"
    assert "classifier" not in (ROOT / "recipes" / "rl" / "fmnist.yaml").read_text().split("model:")[1]
    assert rl["trainer"]["max_steps"] % policy["updates"] == 0


def test_fmnist_rl_recipe_builds(tmp_path):
    """The GRPOModule of the recipe builds (random init: no init_from) with a probe of the pixel features' width."""
    from safetensors.torch import save_file

    from armkit.recipes.rl.offline import CategoryProbe, EditReward, PixelFeatures

    rl = yaml.safe_load((ROOT / "recipes" / "rl" / "fmnist.yaml").read_text())["model"]["init_args"]
    size = rl["reward"]["init_args"]["image_encoder"]["init_args"]["size"]
    save_file({"weight": torch.zeros(10, 3 * size * size), "bias": torch.zeros(10)}, str(tmp_path / "p.safetensors"))
    (tmp_path / "pc.json").write_text(json.dumps({"a photo of a coat.": 4}))
    probe = CategoryProbe(image_encoder=PixelFeatures(size=size), probe=str(tmp_path / "p.safetensors"),
                          prompt_classes=str(tmp_path / "pc.json"), unknown=rl["reward"]["init_args"]["unknown"])
    images = torch.rand(2, 3, 32, 32)
    scores = probe(images, ["a photo of a coat.", "upside down: a photo of a coat."])
    assert scores[0] == pytest.approx(0.1) and scores[1] == 0.0  # uniform probe; the edit caption: unknown
    edit = EditReward(image_encoder=PixelFeatures(size=size))
    assert edit(images, ["turn it upside down"] * 2, images, images).allclose(torch.ones(2))


def _pattern(label: int, rng: torch.Generator) -> Image.Image:
    """Three classes of 16 px grey images: bright top half, bright left half, bright centre; plus noise."""
    x = torch.rand(16, 16, generator=rng) * 0.3
    if label == 0:
        x[:8] += 0.6
    elif label == 1:
        x[:, :8] += 0.6
    else:
        x[4:12, 4:12] += 0.6
    return Image.fromarray((x.clamp(0, 1) * 255).byte().numpy(), "L").convert("RGB")


def test_rl_probe_pixels_writes_a_usable_probe(tmp_path):
    from armkit.recipes.rl.offline import CategoryProbe, PixelFeatures

    names = ["coat", "bag", "dress"]
    folder, rng, rows = tmp_path / "images", torch.Generator().manual_seed(0), []
    folder.mkdir()
    for i in range(48):
        _pattern(i % 3, rng).save(folder / f"{i:03d}.png")
        rows.append({"path": f"{i:03d}.png", "caption": f"a photo of a {names[i % 3]}.", "label": i % 3})
    (folder / "index.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["data", "folder", "--src", str(folder), "--index", str(folder / "index.jsonl"), "--out",
                 str(tmp_path / "shards"), "--val-fraction", "0.25"]) == 0
    assert main(["rl-probe", "--images", str(tmp_path / "shards"), "--out", str(tmp_path / "probe"), "--pixels", "8",
                 "--size", "16", "--steps", "200"]) == 0
    prompt_classes = json.loads((tmp_path / "probe" / "prompt_classes.json").read_text())
    assert prompt_classes == {f"a photo of a {n}.": c for c, n in enumerate(names)}
    reward = CategoryProbe(image_encoder=PixelFeatures(size=8), probe=str(tmp_path / "probe" / "probe.safetensors"),
                           prompt_classes=str(tmp_path / "probe" / "prompt_classes.json"))
    from torchvision.transforms.functional import to_tensor

    fresh = torch.Generator().manual_seed(1)  # new images of each class
    images = torch.stack([to_tensor(_pattern(c, fresh)) for c in range(3) for _ in range(4)])
    right = [f"a photo of a {names[c]}." for c in range(3) for _ in range(4)]
    wrong = [f"a photo of a {names[(c + 1) % 3]}." for c in range(3) for _ in range(4)]
    assert reward(images, right).mean() > 0.6 > 0.2 > reward(images, wrong).mean()  # chance: 1/3


def _samples(path: Path, rows: list[tuple[str, str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"step": 0, "samples": [{"task": t, "prompt": p, "reward": r, "codes": []}
                                                       for t, p, r in rows]}))


def test_seed_measures_reads_held_out_rewards_and_judge(tmp_path):
    classes = {"a photo of a coat.": 4}
    seed = tmp_path / "seed0"
    _samples(seed / "t2i/run/samples/before.json", [("t2i", "a photo of a coat.", 0.2),
                                                    ("t2i", "upside down: a photo of a coat.", 0.0)])
    _samples(seed / "t2i/run/samples/after.json", [("t2i", "a photo of a coat.", 0.6),
                                                   ("t2i", "upside down: a photo of a coat.", 0.0)])
    _samples(seed / "edit/run/samples/before.json", [("edit", "turn it upside down", 0.5)])
    _samples(seed / "edit/run/samples/after.json", [("edit", "turn it upside down", 0.7)])
    _samples(seed / "joint/run/samples/after.json", [("t2i", "a photo of a coat.", 0.5),
                                                     ("edit", "turn it upside down", 0.8)])
    for model, acc in (("sft", 0.5), ("t2i", 0.6)):
        (seed / f"eval-{model}.json").write_text(json.dumps({"t2i_class_accuracy": acc, "caption_accuracy": 0.9}))
    m = grpo.seed_measures(seed, classes)
    assert m["reward_t2i"] == {"sft": 0.2, "t2i": 0.6, "joint": 0.5}  # the unknown-class prompt left out
    assert m["reward_edit"] == {"t2i": 0.5, "edit": 0.7, "joint": 0.8}
    assert m["t2i_class_accuracy"] == {"sft": 0.5, "t2i": 0.6}


def test_summary_pairs_by_seed_with_stats_intervals():
    per_seed = {s: {"reward_t2i": {"sft": 0.30 + 0.01 * s, "t2i": 0.40 + 0.02 * s, "joint": 0.35},
                    "t2i_class_accuracy": {"sft": 0.50, "t2i": 0.50 - 0.01 * s, "edit": 0.5, "joint": 0.45}}
                for s in (0, 1, 2)}
    out = grpo.summarise(per_seed)
    assert out["table"]["reward_t2i"]["sft"]["mean"] == pytest.approx(0.31)
    by = {(c["measure"], c["after"]): c for c in out["comparisons"]}
    d = by[("reward_t2i", "t2i")]["after_minus_before"]  # differences 0.10, 0.11, 0.12
    assert d["values"] == pytest.approx([0.10, 0.11, 0.12]) and d["mean"] == pytest.approx(0.11)
    half = t975(2) * 0.01 / math.sqrt(3)
    assert d["ci95"] == pytest.approx([0.11 - half, 0.11 + half])
    assert by[("reward_t2i", "t2i")]["verdict_after_gt_before"] == "holds"
    assert by[("t2i_class_accuracy", "joint")]["verdict_after_gt_before"] == "reversed"  # -0.05 in every seed
    assert by[("t2i_class_accuracy", "t2i")]["verdict_after_gt_before"] == "not established"  # 0, -0.01, -0.02
    assert ("reward_edit", "edit") not in by  # no such measure: no comparison
    text = grpo.markdown(out)
    assert "| reward_t2i | t2i − sft | 3 | +0.110 |" in text
