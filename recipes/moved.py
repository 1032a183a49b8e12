"""Old module paths of `armkit.recipes` that saved configs, checkpoints and scripts may still name.

recipes/ was laid out again (one folder per stage, one for the shared training runtime): `armkit.recipes.module`
became `armkit.recipes.tokenizer.module`, and so on. A YAML or a checkpoint's saved config that names an old
`class_path` still loads: importing an old module name gives the new module (the same object, so classes compare
equal). Nothing else is done: no code is run that the new module would not run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

OLD_TO_NEW: dict[str, str] = {
    f"armkit.recipes.{old}": f"armkit.recipes.{new}" for old, new in {
        "module": "tokenizer.module",
        "checkpoint_export": "tokenizer.export",
        "feature_cache": "tokenizer.feature_cache",
        "decoder_module": "decoder.module",
        "callbacks": "training.callbacks",
        "checkpoint_io": "training.checkpoint_io",
        "checkpoints": "training.checkpoints",
        "compile": "training.compile",
        "config_checks": "training.config_checks",
        "progress": "training.progress",
        "resume": "training.resume",
        "schedule": "training.schedule",
        "summary": "training.summary",
        "cli": "commands.cli",
        "assets": "data.assets",
        "autoregressive": "ar",
        "autoregressive.demo": "commands.demo_ar",
        "rl.stages": "commands.rl_stages",
    }.items()
}


def new_name(name: str) -> str | None:
    """The current module name for an old one (`armkit.recipes.autoregressive.codes` -> `...ar.codes`), or None."""
    if name in OLD_TO_NEW:
        return OLD_TO_NEW[name]
    head, _, tail = name.rpartition(".")
    while head:
        if head in OLD_TO_NEW:
            return f"{OLD_TO_NEW[head]}.{name[len(head) + 1:]}"
        head, _, _ = head.rpartition(".")
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__  # the import system overwrites __spec__ with the alias's; put it back
        return module

    def exec_module(self, module: ModuleType) -> None:  # the target module is already executed
        module.__spec__ = self.own_spec


class MovedFinder(importlib.abc.MetaPathFinder):
    """Resolves an old `armkit.recipes.*` name to the module that replaced it."""

    def find_spec(self, fullname: str, path=None, target=None):
        target_name = new_name(fullname) if fullname.startswith("armkit.recipes.") else None
        if target_name is None or importlib.util.find_spec(target_name) is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(target_name))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())  # before the path finder, which would load a second copy
