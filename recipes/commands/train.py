"""`armkit train [fit|validate] --config recipes/tokenizer/NAME.yaml [--key=value ...] [--ckpt_path last]`.

LightningCLI underneath: every part (encoder, losses, decoder, data, callbacks, strategy) is a `class_path` /
`init_args` block in YAML. Before any model is built, `preflight` checks the parsed config for the mistakes that
would otherwise surface minutes later: missing weight files and FSQ levels FSQ cannot use.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from armkit.common.cache import AssetError
from armkit.common.weights import local_path
from armkit.recipes.data import ShardDataModule
from armkit.recipes.module import TokenizerModule
from armkit.recipes.progress import StepProgressBar

WEIGHT_KEYS = ("weights", "path", "vae_path")


class ConfigCheckError(SystemExit):
    pass


def _walk(node: Any, where: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{where}.{k}" if where else str(k), k, v
            yield from _walk(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{where}[{i}]")


def preflight(config: Any) -> None:
    """Raise one error naming the key and the fix, before any model is built."""
    tree = config.as_dict() if hasattr(config, "as_dict") else config
    for where, key, value in _walk(tree, ""):
        if key in WEIGHT_KEYS and value == "None":
            raise ConfigCheckError(f"config error: {where} = 'None': for nested keys, `--...{key}=null` on the "
                                   f"command line arrives as the string 'None'; to build without weights, write "
                                   f"`{key}: null` in the YAML")
        if key in WEIGHT_KEYS and isinstance(value, str) and value:
            try:
                exists = local_path(value).exists()
            except AssetError as e:
                raise ConfigCheckError(f"config error: {where} = {value!r}: {e}") from None
            if not exists:
                raise ConfigCheckError(f"config error: {where} = {value!r} does not exist. Give a local path to the "
                                       "weights (`asset:NAME` for the demo's models after `armkit assets`).")
        if key == "levels":
            levels = value if isinstance(value, list) else None
            if not levels or not all(isinstance(v, int) and v >= 2 for v in levels):
                raise ConfigCheckError(f"config error: {where} = {value!r}: FSQ levels must be a list of integers "
                                       ">= 2, e.g. [8, 8, 8, 5, 5, 5] or [2]*16")
        if key in ("train", "val") and where.startswith("data.") and isinstance(value, str) and value \
                and "{" not in value and not Path(value).expanduser().exists():
            raise ConfigCheckError(f"config error: {where} = {value!r} does not exist. Write shards first, e.g. "
                                   "`armkit data emoji --out data/emoji`.")


class ArmkitCLI(LightningCLI):
    """LightningCLI with armkit's defaults: everything a run writes lives under `trainer.default_root_dir`
    (CSV + TensorBoard logs unless `trainer.logger` names others, checkpoints in `checkpoints/`); the progress bar
    counts steps out of max_steps (`StepProgressBar`) unless the recipe names another or turns it off."""

    def before_instantiate_classes(self) -> None:
        preflight(self.config[self.subcommand] if self.subcommand else self.config)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        root = config.get("default_root_dir") or "runs"
        if config.get("logger") in (None, True):
            config["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb")]  # version_N each
        named = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in named):
            callbacks = [*callbacks, StepProgressBar()]
        trainer = super()._instantiate_trainer(config, callbacks)
        for cb in trainer.checkpoint_callbacks:  # resolved now, so that `--ckpt_path last` can find it
            if getattr(cb, "dirpath", None) is None:
                cb.dirpath = str(Path(root) / "checkpoints")
        return trainer


def fit(argv: list[str]) -> ArmkitCLI:
    """Run LightningCLI on `argv` and return it (its `.trainer` holds this run's checkpoint and log paths).
    Raises ConfigCheckError (exit code 2) before building anything when preflight finds a bad config."""
    # Frozen teachers are in eval mode on purpose; `args=` is how armkit hands LightningCLI its arguments.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
    argv = list(argv or [])
    if not argv or argv[0] not in ("fit", "validate"):
        argv = ["fit", *argv]
    return ArmkitCLI(TokenizerModule, ShardDataModule, args=argv, save_config_kwargs={"overwrite": True},
                     auto_configure_optimizers=False)


def main(argv: list[str] | None = None) -> int:
    try:
        fit(list(argv or []))
    except ConfigCheckError as e:
        print(e.code)
        return 2
    return 0
