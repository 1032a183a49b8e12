"""LightningCLI with armkit's defaults, and the preflight that checks a parsed config before anything is built.

Every part (encoder, losses, decoder, data, callbacks, strategy) is a `class_path` / `init_args` block in YAML.
`preflight` catches the mistakes that would otherwise surface minutes later or never: missing weight files, FSQ
levels FSQ cannot use, and values out of range (config_checks.py); a mistyped key is one line naming the closest
valid key. `--ckpt_path` goes through resume.py: `last` falls back to the newest readable checkpoint, and the recipe
stands over whatever hyper-parameters a checkpoint stores. `armkit train`, `armkit ablate` and the demos all run
`fit`.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch
import yaml
from jsonargparse import ActionConfigFile
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from armkit.common.cache import AssetError
from armkit.common.weights import local_path
from armkit.recipes.ar.codes import CodesMetaError, FingerprintError
from armkit.recipes.data import ShardDataModule
from armkit.recipes.rl.guards import RLHalt
from armkit.recipes.tokenizer.module import TokenizerModule
from armkit.recipes.training import resume
from armkit.recipes.training.config_checks import ConfigCheckError, check_values, unknown_key_line
from armkit.recipes.training.progress import StepProgressBar
from armkit.tokenizer import to_spec

WEIGHT_KEYS = ("weights", "path", "vae_path")


class ArmkitParser(LightningArgumentParser):
    """jsonargparse's parser, but a mistyped key or a bad value ends in one line (`config error: unknown key X; did you
    mean Y?`) instead of a 60-line usage dump with a tip naming a command that does not exist."""

    _refused: list[str] = []  # keys of the last class whose options an inner parser refused

    def error(self, message: str, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, "exit_on_error", True):  # an inner parser: jsonargparse catches this and retries
            if "is not accepted" in message:
                ArmkitParser._refused = [a.dest for a in self._actions]
            return super().error(message, *args, **kwargs)
        return self._one_line(message)

    def _one_line(self, message: str) -> Any:
        valid = [a.dest for a in self._actions]
        for action in self._actions:  # the subcommands' keys (`fit`, `validate`)
            for sub in (getattr(action, "_name_parser_map", None) or {}).values():
                valid += [a.dest for a in sub._actions]
        raise ConfigCheckError(unknown_key_line(message, valid, ArmkitParser._refused))


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
    check_values(tree)
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

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("dump_header", [f"lightning.pytorch=={lightning.pytorch.__version__}"])
        parser = ArmkitParser(**kwargs)
        parser.add_argument("-c", "--config", action=ActionConfigFile, help="a YAML recipe (recipes/tokenizer/*.yaml)")
        return parser

    def _set_seed(self) -> None:
        """The config is checked first: a bad one stops with its one line before anything else is printed or built."""
        subcommand = self.config.get("subcommand")
        preflight(self.config[subcommand] if subcommand else self.config)
        super()._set_seed()

    def _parse_ckpt_path(self) -> None:
        """Lightning's CLI re-parses the checkpoint's hyper-parameters over the recipe here; armkit never does (see
        recipes/training/resume.py): the differences are reported in `_prepare_subcommand_kwargs`."""

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if kwargs.get("ckpt_path"):
            folder = next((cb.dirpath for cb in self.trainer.checkpoint_callbacks if cb.dirpath), None)
            chosen = resume.pick(str(kwargs["ckpt_path"]), folder)
            notes = list(chosen.notes)
            if chosen.path and chosen.path != "last":
                model_config = self.config[subcommand]["model"]
                model_config = model_config.as_dict() if hasattr(model_config, "as_dict") else dict(model_config)
                specs = {name: to_spec(getattr(self.model, name)) for name in ("tokenizer", "losses")
                         if hasattr(self.model, name)}  # TokenizerModule's parts; other modules have none
                notes += resume.compare(chosen.path, model_config, specs)
            for line in notes:
                (rank_zero_warn if "recipe stands" in line or "skipping" in line else rank_zero_info)(line)
            kwargs["ckpt_path"] = chosen.path
        return kwargs

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


def names_own_classes(argv: list[str]) -> bool:
    """True when a --config names its model by class_path (the AR recipes: `model: {class_path: ...ARModule}`);
    the tokenizer recipes give TokenizerModule's arguments directly."""
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.partition("=")[2] \
            if arg.startswith("--config=") else None
        if path and Path(path).is_file():
            tree = yaml.safe_load(Path(path).read_text()) or {}
            if isinstance(tree, dict) and isinstance(tree.get("model"), dict) and "class_path" in tree["model"]:
                return True
    return False


def fit(argv: list[str]) -> ArmkitCLI:
    """Run LightningCLI on `argv` and return it (its `.trainer` holds this run's checkpoint and log paths).
    Raises ConfigCheckError (exit code 2) before building anything when preflight finds a bad config."""
    # Frozen teachers are in eval mode on purpose; `args=` is how armkit hands LightningCLI its arguments.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
    argv = list(argv or [])
    if not argv or argv[0] not in ("fit", "validate"):
        argv = ["fit", *argv]
    if names_own_classes(argv):  # any LightningModule / data module named in the YAML (the AR recipes)
        return ArmkitCLI(None, None, subclass_mode_model=True, subclass_mode_data=True, args=argv,
                         save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
    return ArmkitCLI(TokenizerModule, ShardDataModule, args=argv, save_config_kwargs={"overwrite": True},
                     auto_configure_optimizers=False)


def run_fit(argv: list[str]) -> int:
    """`fit(argv)` as an exit code: 0, or 2 after one line on stderr for a bad config, an unusable checkpoint, codes
    from another tokenizer, a code folder whose meta.json is missing or unusable, or an RL run halted (its judge
    failed every retry, or a reward, loss or parameter went non-finite)."""
    try:
        fit(list(argv or []))
    except (ConfigCheckError, resume.ResumeError) as e:
        print(e.code, file=sys.stderr)
        return 2
    except Exception as e:  # jsonargparse wraps errors raised while building; a tokenizer mismatch is one line
        cause = mismatch(e)
        if cause is None:
            raise
        print(f"{'config error' if isinstance(cause, CodesMetaError) else 'error'}: {cause}", file=sys.stderr)
        return 2
    return 0


def mismatch(error: BaseException | None) -> FingerprintError | CodesMetaError | RLHalt | None:
    """The FingerprintError (codes, model or tokenizer from different tokenizers), CodesMetaError (a code folder's
    meta.json missing or unusable) or RLHalt (an RL reward that failed every retry, a non-finite reward, loss or
    parameter) behind `error`, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (FingerprintError, CodesMetaError, RLHalt)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
