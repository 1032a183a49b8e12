"""Rebuildable modules: one `class_path`/`init_args` spec for YAML configs and for exported folders.

A class that inherits `Buildable` records the arguments its constructor was called with. `to_spec` turns such an
object (and any Buildable objects among its arguments) into plain JSON in LightningCLI's `class_path`/`init_args`
form; `build` turns that JSON back into objects.

`build` only imports Buildable subclasses from armkit's own packages (checked by where the module was loaded from,
not only by its name), plus packages the *caller* trusts by name (`trust=["mylab"]`): a config file can never
widen that list, so a tampered config cannot name an arbitrary callable. Class paths written before armkit 0.2
(`tokenizer.…`, `decoders.…`, `backbones.…`) are read as `armkit.…`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

ALLOWED_PACKAGES = ("armkit.tokenizer", "armkit.decoders", "armkit.backbones")
LEGACY_PACKAGES = ("tokenizer", "decoders", "backbones")  # exports written before the `armkit.` import name
ARMKIT_ROOT = Path(__file__).resolve().parents[1]  # the folder the `armkit` package is loaded from


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


def _under(path: str, package: str) -> bool:
    return path == package or path.startswith(package + ".")


def canonical(path: str) -> str:
    """`path` with a pre-0.2 top-level name (`tokenizer.model.Tokenizer`) mapped to its `armkit.` name."""
    return f"armkit.{path}" if any(_under(path, p) for p in LEGACY_PACKAGES) else path


def check_trust(trust: Sequence[str]) -> tuple[str, ...]:
    """The caller's trusted package names, each a plain dotted module name (never armkit's own, never empty)."""
    names = (trust,) if isinstance(trust, str) else tuple(trust)
    for name in names:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"trust: {name!r} is not a package name (e.g. 'mylab' or 'mylab.losses')")
    return names


_TRUSTED: ContextVar[tuple[str, ...]] = ContextVar("armkit_trusted_packages", default=())


@contextmanager
def trusted(packages: Sequence[str]) -> Iterator[None]:
    """Within this block, `build` and `resolve` also accept classes from `packages` (the caller's own, e.g. a
    fifth loss in `mylab`). The commands' `--trust` flag uses it; a config file never can."""
    token = _TRUSTED.set(_TRUSTED.get() + check_trust(packages))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def resolve(path: str, *, trust: Sequence[str] = ()) -> type:
    """Import the Buildable class named by `path`: under armkit's own packages (loaded from armkit's own folder)
    or under a package the caller trusts (`trust`, or an enclosing `trusted(...)` block)."""
    trusted = check_trust(trust) + _TRUSTED.get()
    if not isinstance(path, str):
        raise ConfigError(f"class_path {path!r} is not a string")
    path = canonical(path)
    own = any(_under(path, p) for p in ALLOWED_PACKAGES)
    if not own and not any(_under(path, p) for p in trusted):
        hint = f" or the trusted {list(trusted)}" if trusted else ""
        raise ConfigError(f"class_path {path!r} is not allowed: only classes under {ALLOWED_PACKAGES}{hint} can be "
                          f"built. For your own package, pass it as trusted (trust=[{path.split('.')[0]!r}] in "
                          f"Python, --trust {path.split('.')[0]} on the command line)")
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"class_path {path!r} names no known class ({e})") from None
    if own:
        origin = Path(getattr(module, "__file__", None) or "/").resolve()
        if not origin.is_relative_to(ARMKIT_ROOT):
            raise ConfigError(f"class_path {path!r}: module {module_name} was loaded from {origin}, outside armkit "
                              f"({ARMKIT_ROOT}); refusing to build it")
    if not (isinstance(obj, type) and issubclass(obj, Buildable)):
        raise ConfigError(f"class_path {path!r} is not a Buildable class")
    return obj


def build(spec: Any, *, where: str = "config", trust: Sequence[str] = ()) -> Any:
    """Inverse of `to_spec`: instantiate every {"class_path", "init_args"} dict, innermost first. `trust` names the
    caller's own packages whose Buildable classes may be built too (see `resolve`)."""
    if isinstance(spec, dict) and "class_path" in spec:
        unknown = set(spec) - {"class_path", "init_args"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} beside class_path")
        cls = resolve(spec["class_path"], trust=trust)
        args = {k: build(v, where=f"{where}.{k}", trust=trust) for k, v in (spec.get("init_args") or {}).items()}
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            bad = sorted(set(args) - set(params))
            if bad:
                raise ConfigError(f"{where}: {spec['class_path']} has no argument(s) {bad}")
        return cls(**args)
    if isinstance(spec, list):
        return [build(v, where=f"{where}[{i}]", trust=trust) for i, v in enumerate(spec)]
    if isinstance(spec, dict):
        return {k: build(v, where=f"{where}.{k}", trust=trust) for k, v in spec.items()}
    return spec
