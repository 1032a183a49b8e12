"""Rebuildable modules: one `class_path`/`init_args` spec for YAML configs and for exported folders.

A class that inherits `Buildable` records the arguments its constructor was called with. `to_spec` turns such an
object (and any Buildable objects among its arguments) into plain JSON in LightningCLI's `class_path`/`init_args`
form; `build` turns that JSON back into objects. `build` only imports classes under the packages in
`ALLOWED_PACKAGES` that are Buildable subclasses, so a tampered config cannot name an arbitrary callable.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from typing import Any

ALLOWED_PACKAGES = ("tokenizer", "decoders", "backbones")


class ConfigError(ValueError):
    """A config names an unknown class or key, or holds a value that cannot be used."""


class Buildable:
    """Mixin: remembers the constructor's bound arguments in `self.init_args` (outermost constructor only)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_args", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:  # the outermost class records; super().__init__ calls do not
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = dict(bound.arguments)
                recorded.pop(next(iter(signature.parameters)))  # drop `self`
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(recorded.pop(name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                        raise TypeError(f"{cls.__name__}: Buildable constructors cannot take *{name}")
                object.__setattr__(self, "_init_args", recorded)
            init(self, *args, **kw)

        recording_init._records_args = True  # type: ignore[attr-defined]
        cls.__init__ = recording_init  # type: ignore[method-assign]

    @property
    def init_args(self) -> dict[str, Any]:
        return dict(self.__dict__.get("_init_args", {}))


def class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_spec(value: Any, *, where: str = "") -> Any:
    """JSON-ready form of `value`: Buildable objects become {"class_path", "init_args"} recursively."""
    if isinstance(value, Buildable):
        args = {k: to_spec(v, where=f"{where}.{k}" if where else k) for k, v in value.init_args.items()}
        return {"class_path": class_path(value), "init_args": args}
    if isinstance(value, (list, tuple)):
        return [to_spec(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): to_spec(v, where=f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"cannot serialise {where or 'value'} of type {type(value).__name__}; "
                      "make it a Buildable or a plain value")


def resolve(path: str) -> type:
    """Import the Buildable class named by `path`, refusing anything outside ALLOWED_PACKAGES."""
    if not isinstance(path, str) or path.split(".")[0] not in ALLOWED_PACKAGES:
        raise ConfigError(f"class_path {path!r} is not allowed: only classes under {ALLOWED_PACKAGES} can be built")
    module_name, _, name = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"class_path {path!r} names no known class ({e})") from None
    if not (isinstance(obj, type) and issubclass(obj, Buildable)):
        raise ConfigError(f"class_path {path!r} is not a Buildable armkit class")
    return obj


def build(spec: Any, *, where: str = "config") -> Any:
    """Inverse of `to_spec`: instantiate every {"class_path", "init_args"} dict, innermost first."""
    if isinstance(spec, dict) and "class_path" in spec:
        unknown = set(spec) - {"class_path", "init_args"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} beside class_path")
        cls = resolve(spec["class_path"])
        args = {k: build(v, where=f"{where}.{k}") for k, v in (spec.get("init_args") or {}).items()}
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            bad = sorted(set(args) - set(params))
            if bad:
                raise ConfigError(f"{where}: {spec['class_path']} has no argument(s) {bad}")
        return cls(**args)
    if isinstance(spec, list):
        return [build(v, where=f"{where}[{i}]") for i, v in enumerate(spec)]
    if isinstance(spec, dict):
        return {k: build(v, where=f"{where}.{k}") for k, v in spec.items()}
    return spec
