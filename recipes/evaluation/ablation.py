"""The loss ablation: train each variant (a named set of losses and weights) for each seed, evaluate it, skip what is
finished.

The config is plain YAML (not LightningCLI); see recipes/tokenizer/ablation.yaml:

    base: recipes/tokenizer/demo.yaml       # the `armkit train` recipe every run starts from
    data: {train: data/emoji, val: data/emoji}   # optional: overrides the recipe's data.train / data.val
    variants:                               # loss names are those under the recipe's model.losses.losses
      cap+pix: [caption, pixel]             # a list: these losses on, at the recipe's weights; the others off
      pix=10: {caption: null, pixel: 10, sigmoid: null, distill: null}   # a mapping: loss -> weight (null: recipe's)
    reference: all                          # the row every other is compared with, paired by seed (default: the
                                            # variant with every loss at the recipe's weights, else the first)
    seeds: [0, 1, 2]                        # seed_everything, model.seed and data.seed of each run
    train: {max_steps: 300, minutes: null, cosine: end, args: [...]}   # budget per run; extra `armkit train` args
    eval: {data: null, classes: null, device: cpu, protocol: {limit: 256, steps: 10, ...},
           ar_probe: {steps: 300}}           # optional: AR-friendliness per run (ar_probe.py; seed: the run's)
    keep_checkpoints: false                 # false: keep only each run's final checkpoint

Each run lives in OUT/<variant>/seed<k>/: the LightningCLI run (default_root_dir), final/last.ckpt (saved once, when
training ends), run.json (settings, training time) and metrics.json (`armkit eval`'s report). A run whose metrics.json
exists is skipped; one with a resumable checkpoint but no final one resumes (`--ckpt_path last`). A run trained or
evaluated with other settings is an error naming what to delete, so that one table never mixes settings; deleting only
the metrics.json files re-evaluates under a new protocol without training again.

`train.cosine` (or `--cosine`): `end` (default) sets the recipe's cosine_steps so that each run's learning rate
reaches the schedule's floor at its last step (max_steps minus the recipe's warmup), like `armkit demo --steps`;
`recipe` keeps the recipe's own cosine_steps (a shorter run then stops part-way down it); an integer sets it. With a
time budget alone (`minutes`, no max_steps) the step count is unknown and `end` keeps the recipe's, as it does for a
recipe without a cosine (cosine_steps 0: flat after warmup).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from armkit.recipes.evaluation.protocol import Protocol
from armkit.recipes.training.schedule import cosine_for, recipe_schedule

LOSS_KINDS = {"CaptionLoss": "caption", "PixelLoss": "pixel", "SigmoidLoss": "sigmoid", "DistillLoss": "distill"}
KEYS = {"base", "data", "variants", "reference", "seeds", "train", "eval", "keep_checkpoints"}
RUN = "{RUN}"  # stands for the run folder in the recorded settings, so a moved OUT still matches


class AblationError(ValueError):
    """A bad ablation config or a run that failed; names the key or the run."""


@dataclass
class AblationConfig:
    path: Path
    base: Path
    loss_kinds: dict[str, str]  # loss name in the base recipe -> caption | pixel | sigmoid | distill (or its name)
    variants: dict[str, list[str]]  # variant -> the losses it enables
    seeds: list[int]
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> {loss: weight} set by the config
    reference: str | None = None
    data: dict[str, str | None] = field(default_factory=dict)
    max_steps: int | None = None
    minutes: float | None = None
    cosine_steps: int | None = None  # set on every run; None: the recipe's
    train_args: list[str] = field(default_factory=list)
    eval_data: str = ""
    classes: list[str] | None = None
    device: str = "cpu"
    protocol: Protocol = field(default_factory=Protocol)
    keep_checkpoints: bool = False
    ar_probe: dict[str, Any] | None = None  # eval.ar_probe: ARProbe fields; None (or steps 0): off

    def probe(self, seed: int) -> Any:
        """The AR probe of the run with this seed (its seed unless eval.ar_probe.seed is set), or None."""
        if not self.ar_probe or not self.ar_probe.get("steps"):
            return None
        from armkit.recipes.evaluation.ar_probe import ARProbe

        return ARProbe.from_mapping({"seed": seed, **self.ar_probe}, where=f"{self.path}: eval.ar_probe")

    def kinds(self, variant: str) -> list[str]:
        return sorted(self.loss_kinds[name] for name in self.variants[variant])

    def describe(self, variant: str) -> str:
        """"caption + pixel" or, with weights set by the config, "caption + 10 pixel"."""
        weights = self.weights.get(variant, {})
        return " + ".join(f"{weights[n]:g} {self.loss_kinds[n]}" if n in weights else self.loss_kinds[n]
                          for n in sorted(self.variants[variant], key=lambda n: self.loss_kinds[n]))


def parse_variant(path: Path, name: str, spec: Any, loss_kinds: dict[str, str], base: Path) -> tuple[list[str],
                                                                                                   dict[str, float]]:
    """(losses, {loss: weight}) of one `variants` entry: a list of loss names, or a mapping loss -> weight|null."""
    if not re.fullmatch(r"[A-Za-z0-9+_.=-]+", str(name)):
        raise AblationError(f"{path}: variant name {name!r} may hold only letters, digits and + _ . = -")
    if isinstance(spec, list) and spec:
        losses, weights = [str(loss) for loss in spec], {}
    elif isinstance(spec, dict) and spec:
        losses, weights = [str(loss) for loss in spec], {}
        for loss, weight in spec.items():
            if weight is None:
                continue
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise AblationError(f"{path}: variants.{name}.{loss} must be a weight >= 0 or null (the recipe's), "
                                    f"got {weight!r}")
            weights[str(loss)] = float(weight)
    else:
        raise AblationError(f"{path}: variants.{name} must be a non-empty list of loss names or a mapping loss -> "
                            "weight (null: the recipe's weight)")
    bad = sorted(set(losses) - set(loss_kinds))
    if bad:
        raise AblationError(f"{path}: variants.{name} names loss(es) {bad} that {base} does not have; it has "
                            f"{sorted(loss_kinds)}")
    return losses, weights


def find_base(value: Any, config_path: Path) -> Path:
    """The base recipe: as given (from the current folder), else next to the ablation config."""
    if not isinstance(value, str) or not value:
        raise AblationError(f"{config_path}: 'base' must name an `armkit train` recipe YAML")
    for candidate in (Path(value).expanduser(), config_path.parent / value, config_path.parent / Path(value).name):
        if candidate.is_file():
            return candidate
    raise AblationError(f"{config_path}: base recipe {value!r} not found (looked from {Path.cwd()} and "
                        f"{config_path.parent})")


def recipe_losses(base: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """({loss name: kind}, the recipe's data block) from the base recipe's model.losses."""
    try:
        recipe = yaml.safe_load(base.read_text()) or {}
    except yaml.YAMLError as e:
        raise AblationError(f"base recipe {base} is not valid YAML ({e})") from None
    losses = ((recipe.get("model") or {}).get("losses")) or {}
    losses = (losses.get("init_args") or losses).get("losses") if isinstance(losses, dict) else None
    if not isinstance(losses, dict) or not losses:
        raise AblationError(f"base recipe {base} has no model.losses.losses mapping to switch losses on and off")
    kinds = {}
    for name, spec in losses.items():
        cls = str((spec or {}).get("class_path", "")).rsplit(".", 1)[-1] if isinstance(spec, dict) else ""
        kinds[str(name)] = LOSS_KINDS.get(cls, str(name))
    data = recipe.get("data") or {}
    return kinds, (data.get("init_args") or data) if isinstance(data, dict) else {}


def load_config(path: str | Path, *, seeds: list[int] | None = None, variants: list[str] | None = None,
                max_steps: int | None = None, minutes: float | None = None, limit: int | None = None,
                steps: int | None = None, data: str | Path | None = None,
                cosine: str | int | None = None, ar_probe_steps: int | None = None) -> AblationConfig:
    """Parse and check the ablation YAML; the keyword arguments (command-line flags) win over it. `data`: one shard
    folder for training, validation and evaluation (`armkit ablate --data`)."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"ablation config {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise AblationError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise AblationError(f"{path}: unknown key(s) {unknown}; known: {sorted(KEYS)}")
    base = find_base(raw.get("base"), path)
    loss_kinds, recipe_data = recipe_losses(base)

    all_variants = raw.get("variants") or {}
    if not isinstance(all_variants, dict) or not all_variants:
        raise AblationError(f"{path}: 'variants' must map a name to the losses (and weights) it trains")
    chosen, weights = {}, {}
    for name, spec in all_variants.items():
        chosen[str(name)], weights[str(name)] = parse_variant(path, str(name), spec, loss_kinds, base)
    if variants:
        missing = sorted(set(variants) - set(chosen))
        if missing:
            raise AblationError(f"--variants {missing} not in {path} (it has {sorted(chosen)})")
        chosen = {name: chosen[name] for name in variants}
    reference = raw.get("reference")
    if reference is not None and str(reference) not in all_variants:
        raise AblationError(f"{path}: reference {reference!r} is not one of the variants {sorted(all_variants)}")
    if reference is None or str(reference) not in chosen:
        full = [v for v in chosen if set(chosen[v]) == set(loss_kinds) and not weights[v]]
        reference = full[0] if full else next(iter(chosen))

    seeds = list(seeds if seeds is not None else raw.get("seeds") or [0])
    if not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise AblationError(f"{path}: seeds must be distinct integers, got {seeds}")
    train = raw.get("train") or {}
    given_data = raw.get("data") or {}
    evaluation = raw.get("eval") or {}
    for key, block, known in (("train", train, {"max_steps", "minutes", "cosine", "args"}),
                              ("data", given_data, {"train", "val"}),
                              ("eval", evaluation, {"data", "classes", "device", "protocol", "ar_probe"})):
        extra = sorted(set(block) - known) if isinstance(block, dict) else ["(not a mapping)"]
        if extra:
            raise AblationError(f"{path}: unknown key(s) {extra} in '{key}'; known: {sorted(known)}")
    max_steps = max_steps if max_steps is not None else train.get("max_steps")
    minutes = minutes if minutes is not None else train.get("minutes")
    if max_steps is None and minutes is None:
        raise AblationError(f"{path}: give train.max_steps or train.minutes (the recipe's stream never ends)")
    cosine_steps = resolve_cosine(path, base, cosine if cosine is not None else train.get("cosine", "end"),
                                  max_steps)
    if data is not None:  # --data: one shard folder for everything
        given_data, evaluation = {"train": str(data), "val": str(data)}, {**evaluation, "data": str(data)}
    data = given_data
    eval_data = evaluation.get("data") or data.get("val") or recipe_data.get("val") or data.get("train") \
        or recipe_data.get("train")
    if not eval_data:
        raise AblationError(f"{path}: no eval data: set eval.data (or data.val)")
    protocol = Protocol.from_mapping(evaluation.get("protocol"), where=f"{path}: eval.protocol")
    protocol = protocol.replace(limit=limit, steps=steps)
    ar_probe = evaluation.get("ar_probe") or {}
    if not isinstance(ar_probe, dict):
        raise AblationError(f"{path}: eval.ar_probe must be a mapping, e.g. {{steps: 300}}; got {ar_probe!r}")
    ar_probe = dict(ar_probe)
    if ar_probe_steps is not None:
        ar_probe["steps"] = ar_probe_steps
    cfg = AblationConfig(path=path, base=base, loss_kinds=loss_kinds, variants=chosen, seeds=seeds, data=data,
                         weights={v: weights[v] for v in chosen}, reference=str(reference),
                         max_steps=max_steps, minutes=minutes, cosine_steps=cosine_steps,
                         train_args=[str(a) for a in train.get("args") or []],
                         eval_data=str(eval_data), classes=evaluation.get("classes"),
                         device=str(evaluation.get("device") or "cpu"), protocol=protocol,
                         keep_checkpoints=bool(raw.get("keep_checkpoints", False)), ar_probe=ar_probe or None)
    try:
        cfg.probe(0)  # a bad eval.ar_probe is an error now, not after the first run's training
    except (TypeError, ValueError) as e:
        raise AblationError(str(e)) from None
    return cfg


def resolve_cosine(path: Path, base: Path, cosine: str | int, max_steps: int | None) -> int | None:
    """The cosine_steps every run sets, or None where the recipe's stays: `end` (the run's last step is the
    schedule's floor), `recipe`, or a number of steps."""
    if isinstance(cosine, str) and cosine.strip().lstrip("-").isdigit():
        cosine = int(cosine)
    recipe_cosine = recipe_schedule(base)[1]
    if cosine == "recipe" or (cosine == "end" and (max_steps is None or recipe_cosine == 0)):
        return None  # a recipe without a cosine (flat after warmup) stays flat
    if cosine == "end":
        steps = cosine_for(base, int(max_steps))
    elif isinstance(cosine, int) and not isinstance(cosine, bool) and cosine >= 0:
        steps = cosine
    else:
        raise AblationError(f"{path}: train.cosine (--cosine) must be 'end', 'recipe' or a number of steps >= 0, "
                            f"got {cosine!r}")
    return None if steps == recipe_cosine else steps  # the recipe's own value changes nothing


def max_time(minutes: float) -> str:
    """Lightning's DD:HH:MM:SS."""
    seconds = int(round(minutes * 60))
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_argv(cfg: AblationConfig, variant: str, seed: int) -> list[str]:
    """`armkit train` arguments of one run, with RUN standing for its folder."""
    argv = ["fit", "--config", str(cfg.base), f"--trainer.default_root_dir={RUN}"]
    for split in ("train", "val"):
        if split in cfg.data:
            value = cfg.data[split]
            argv.append(f"--data.{split}={'null' if value is None else value}")
    argv += [f"--seed_everything={seed}", f"--model.seed={seed}", f"--data.seed={seed}"]
    for name in cfg.loss_kinds:
        on = "true" if name in cfg.variants[variant] else "false"
        argv.append(f"--model.losses.losses.{name}.init_args.enabled={on}")
    for name, weight in cfg.weights.get(variant, {}).items():
        argv.append(f"--model.losses.losses.{name}.init_args.weight={weight:g}")
    if cfg.max_steps is not None:
        argv.append(f"--trainer.max_steps={int(cfg.max_steps)}")
    elif cfg.minutes is not None:
        argv.append("--trainer.max_steps=-1")
    # The ablation's budget replaces the recipe's: without `minutes`, every run trains exactly max_steps steps.
    argv.append(f"--trainer.max_time={max_time(float(cfg.minutes)) if cfg.minutes is not None else 'null'}")
    if cfg.cosine_steps is not None:
        argv.append(f"--model.cosine_steps={cfg.cosine_steps}")
    argv += cfg.train_args
    # One extra checkpoint callback that saves exactly once, when training ends (max_steps or max_time): the weights
    # evaluated. save_top_k=0 keeps it from saving on the recipe's schedule.
    argv += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
             f"--trainer.callbacks.dirpath={RUN}/final", "--trainer.callbacks.save_top_k=0",
             "--trainer.callbacks.save_last=true"]
    return argv


def settings(cfg: AblationConfig, variant: str, seed: int) -> dict[str, Any]:
    """Everything a run's result depends on, as recorded in run.json and compared on a rerun."""
    evaluation = {"data": cfg.eval_data, "classes": cfg.classes, "device": cfg.device,
                  "protocol": cfg.protocol.as_dict()}
    probe = cfg.probe(seed)
    if probe is not None:  # only then: runs evaluated before the probe existed keep matching
        evaluation["ar_probe"] = probe.as_dict()
    return {"train_argv": train_argv(cfg, variant, seed), "losses": cfg.variants[variant], "eval": evaluation}


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / variant / f"seed{seed}"


def check_settings(root: Path, have: dict[str, Any], want: dict[str, Any], evaluated: bool) -> None:
    """A run trained with other training settings must be redone; one evaluated under another protocol re-evaluated."""
    train_keys = ("train_argv", "losses")
    if have and any(have.get(k) != want[k] for k in train_keys):
        diff = [k for k in train_keys if have.get(k) != want[k]]
        raise AblationError(f"{root} was trained with other settings ({', '.join(diff)} differ); delete that folder "
                            "to redo the run, or give another --out")
    if evaluated and have.get("eval") != want["eval"]:
        raise AblationError(f"{root / 'metrics.json'} was evaluated with other eval settings; delete the runs' "
                            "metrics.json files to evaluate them again without training, or give another --out")


def train_run(cfg: AblationConfig, variant: str, seed: int, root: Path, log) -> dict[str, Any]:
    """Train one run in this process (resuming a partial one); returns run.json's content."""
    from armkit.recipes.training.fit import run_fit as train_main  # lightning is imported only when training

    argv = [a.replace(RUN, str(root)) for a in train_argv(cfg, variant, seed)]
    resume = (root / "checkpoints" / "last.ckpt").is_file()
    if resume:
        argv += ["--ckpt_path", "last"]
        log(f"  resuming from {root / 'checkpoints' / 'last.ckpt'}")
    started = time.time()
    try:
        code = train_main(argv)
    except SystemExit as e:  # LightningCLI / jsonargparse exit on a bad argument
        code = e.code if isinstance(e.code, int) else 2
    if code != 0:
        raise AblationError(f"training {variant} seed {seed} failed (exit {code}); arguments: {argv}")
    final = root / "final" / "last.ckpt"
    if not final.is_file():
        raise AblationError(f"training {variant} seed {seed} ended without its final checkpoint {final}")
    return {"variant": variant, "seed": seed, "train_seconds": round(time.time() - started, 1), "resumed": resume,
            "settings": settings(cfg, variant, seed)}


def evaluate_run(cfg: AblationConfig, root: Path, info: dict[str, Any]) -> dict[str, Any]:
    from armkit.recipes.evaluation.evaluate import evaluate, save_report
    from armkit.recipes.evaluation.load import load_for_eval

    loaded = load_for_eval(root / "final" / "last.ckpt")
    report = evaluate(loaded, cfg.eval_data, cfg.protocol, classes=cfg.classes, device=cfg.device,
                      command=f"armkit ablate --config {cfg.path} (run {info['variant']} seed {info['seed']})",
                      ar_probe=cfg.probe(int(info["seed"])))
    report["run"] = {k: info[k] for k in ("variant", "seed", "train_seconds", "resumed")}
    report["run"].update(losses=cfg.variants[info["variant"]], kinds=cfg.kinds(info["variant"]),
                         weights=cfg.weights.get(info["variant"], {}),
                         global_step=loaded.source.get("global_step"))
    save_report(report, root / "metrics.json")
    return report


def run_one(cfg: AblationConfig, out: Path, variant: str, seed: int, log=print) -> dict[str, Any]:
    """Train and evaluate one run unless its metrics.json exists; returns the metrics report."""
    root = run_dir(out, variant, seed)
    want = settings(cfg, variant, seed)
    info_path, metrics = root / "run.json", root / "metrics.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    check_settings(root, info.get("settings") or {}, want, metrics.is_file())
    if metrics.is_file():
        log(f"{variant} seed {seed}: finished earlier, skipped ({metrics})")
        return json.loads(metrics.read_text())
    root.mkdir(parents=True, exist_ok=True)
    if not info.get("trained") or not (root / "final" / "last.ckpt").is_file():
        log(f"{variant} seed {seed}: training losses {cfg.variants[variant]} in {root}")
        info_path.write_text(json.dumps({"variant": variant, "seed": seed, "settings": want, "trained": False},
                                        indent=2) + "\n")
        info = {**train_run(cfg, variant, seed, root, log), "trained": True}
        log(f"{variant} seed {seed}: trained in {info['train_seconds']:.0f} s")
    info["settings"] = want  # the eval settings may be new (metrics.json deleted to re-evaluate)
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    report = evaluate_run(cfg, root, info)
    log(f"{variant} seed {seed}: evaluated in {report['timing']['seconds']:.0f} s")
    if not cfg.keep_checkpoints:  # the resume points; the final checkpoint stays
        shutil.rmtree(root / "checkpoints", ignore_errors=True)
    return report


def run_ablation(cfg: AblationConfig, out: str | Path, log=print) -> list[dict[str, Any]]:
    """Every (variant, seed) run; rewrites the tables after each one so that progress is visible."""
    from armkit.recipes.evaluation.table import write_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    total = len(cfg.variants) * len(cfg.seeds)
    for i, (variant, seed) in enumerate(((v, s) for v in cfg.variants for s in cfg.seeds), 1):
        log(f"[{i}/{total}] {variant} seed {seed}")
        reports.append(run_one(cfg, out, variant, seed, log=log))
        write_outputs(out, cfg, reports)
    return reports
