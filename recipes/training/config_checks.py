"""Checks on a parsed training config, run before anything is built: each failure is one line naming the key.

`check_values` catches the values that would otherwise fail minutes later with a traceback from deep inside a model
(`batch_size: 0`, `patch_size: 7` for 32 px, every loss off) or train silently on nonsense (`lr: 0`,
`warmup_steps: -5`, data at another size than the encoder reads). `unknown_key_line` turns jsonargparse's usage dump
for a mistyped key into one line with the closest valid key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from typing import Any


class ConfigCheckError(SystemExit):
    """A config that cannot train; `code` holds the one-line message (printed by `armkit train`, exit status 2)."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(key: str, value: Any, need: str) -> None:
    raise ConfigCheckError(f"config error: {key} = {value!r}: {need}")


def _init_args(node: Any) -> dict:
    return (node.get("init_args") or {}) if isinstance(node, dict) else {}


def _size(value: Any) -> tuple[int, int] | None:
    if _number(value):
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def check_optimizer(model: dict, prefix: str = "model.") -> None:
    """The optimiser's numbers, wherever a module takes them (`model.lr`, or `model.init_args.lr` for a module named
    by class_path: the AR and RL recipes)."""
    lr = model.get("lr")
    if lr is not None and (not _number(lr) or not math.isfinite(lr) or lr <= 0):
        _fail(f"{prefix}lr", lr, "the learning rate must be a finite number > 0")
    betas = model.get("betas")
    if betas is not None and (not isinstance(betas, (list, tuple)) or len(betas) != 2
                              or not all(_number(b) and 0 <= b < 1 for b in betas)):
        _fail(f"{prefix}betas", betas, "AdamW betas are two numbers in [0, 1), e.g. [0.9, 0.95]")
    for key in ("weight_decay",):
        value = model.get(key)
        if value is not None and (not _number(value) or not math.isfinite(value) or value < 0):
            _fail(f"{prefix}{key}", value, "must be a finite number >= 0")
    for key in ("warmup_steps", "cosine_steps", "usage_window"):
        value = model.get(key)
        if value is not None and (not _int(value) or value < 0):
            _fail(f"{prefix}{key}", value, "must be an integer >= 0")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


def check_ar_model(args: dict, prefix: str) -> None:
    """An ARModule's or GRPOModule's `init_args` (at `prefix`): the policy's ARModel spec (types, ranges and the memory
    it would take, as an AR export is checked: recipes/ar/export_checks.py), tasks, dropouts and the GRPO knobs."""
    from armkit.recipes.ar.export_checks import check_model_spec
    from armkit.tokenizer.export_checks import ConfigValueError

    spec = args.get("model")
    if isinstance(spec, dict) and "class_path" in spec:
        try:
            check_model_spec(spec, "", f"{prefix}model", exported=False)
        except ConfigValueError as e:
            raise ConfigCheckError(f"config error: {e}") from None
    tasks = args.get("tasks")
    if tasks is not None and (not isinstance(tasks, dict) or not tasks or set(tasks) - {"t2i", "und", "edit"}
                              or not all(_finite(w) and w >= 0 for w in tasks.values())
                              or sum(tasks.values()) <= 0):
        _fail(f"{prefix}tasks", tasks, "weights of t2i / und / edit, each a finite number >= 0, with a sum > 0")
    for key in ("text_dropout", "image_dropout"):
        value = args.get(key)
        if value is not None and (not _finite(value) or not 0 <= value <= 1):
            _fail(f"{prefix}{key}", value, "a probability: a number in [0, 1]")
    for key, low in (("max_text", 1), ("group_size", 2), ("updates", 1), ("decode_steps", 1), ("top_k", 0),
                     ("seed", 0)):
        value = args.get(key)
        if value is not None and (not _int(value) or value < low):
            _fail(f"{prefix}{key}", value, f"must be an integer >= {low}")
    for key in ("t2i_temperature", "edit_temperature", "clip", "grad_clip"):
        value = args.get(key)
        if value is not None and (not _finite(value) or value <= 0):
            _fail(f"{prefix}{key}", value, "must be a finite number > 0")
    beta = args.get("beta")
    if beta is not None and (not _finite(beta) or beta < 0):
        _fail(f"{prefix}beta", beta, "the KL weight must be a finite number >= 0")
    stage = args.get("stage")
    if stage is not None and stage not in ("t2i", "edit", "joint"):
        _fail(f"{prefix}stage", stage, "must be t2i, edit or joint")


def check_model(model: dict) -> None:
    """`model.*`: the optimiser's numbers, FSQ codebooks, the decoder's patch grid, the losses. A module named by
    class_path (the AR and RL recipes) is checked at `model.init_args.*`."""
    if "class_path" in model:
        args = _init_args(model)
        check_optimizer(args, "model.init_args.")
        check_ar_model(args, "model.init_args.")
        return
    check_optimizer(model)
    tok = _init_args(model.get("tokenizer"))
    codebooks = tok.get("num_codebooks")
    if codebooks is not None and (not isinstance(codebooks, int) or isinstance(codebooks, bool) or codebooks < 1):
        _fail("model.tokenizer.init_args.num_codebooks", codebooks, "must be an integer >= 1")
    decoder = _init_args(tok.get("decoder"))
    size, patch = _size(decoder.get("image_size")), decoder.get("patch_size")
    if patch is not None and (not isinstance(patch, int) or isinstance(patch, bool) or patch < 1):
        _fail("model.tokenizer.init_args.decoder.init_args.patch_size", patch, "must be an integer >= 1")
    if size and patch and (size[0] % patch or size[1] % patch):
        _fail("model.tokenizer.init_args.decoder.init_args.patch_size", patch,
              f"the decoder's image_size {list(size)} must be divisible by it")
    losses = _init_args(model.get("losses")).get("losses")
    if isinstance(losses, dict) and losses:
        enabled = []
        for name, loss in losses.items():
            args = _init_args(loss)
            weight = args.get("weight", 1.0)
            if not _number(weight) or not math.isfinite(weight) or weight < 0:
                _fail(f"model.losses.init_args.losses.{name}.init_args.weight", weight, "must be a finite number >= 0")
            if args.get("enabled", True) is not False:
                enabled.append(name)
        if not enabled:
            _fail("model.losses.init_args.losses", sorted(losses), "every loss is off (enabled: false); enable one")


def check_data(data: dict, model: dict) -> None:
    """`data.*` (or `data.init_args.*` for a data module named by class_path): batch size, workers, and an image size
    the encoder reads."""
    prefix = "data."
    if "class_path" in data:
        data, prefix = _init_args(data), "data.init_args."
    batch = data.get("batch_size")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
        _fail(f"{prefix}batch_size", batch, "must be an integer >= 1")
    workers = data.get("num_workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        _fail(f"{prefix}num_workers", workers, "must be an integer >= 0 (0 reads in the training process)")
    for key in ("shuffle_buffer", "val_limit"):
        value = data.get(key)
        if value is not None and (not _int(value) or value < 1):
            _fail(f"{prefix}{key}", value, "must be an integer >= 1")
    size = data.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        _fail("data.image_size", size, "must be an integer >= 1")
    encoder = _init_args(_init_args(model.get("tokenizer")).get("encoder"))
    wanted = _size(encoder.get("image_size"))
    if size is not None and wanted is not None and (size, size) != wanted:
        _fail("data.image_size", size, f"the encoder reads {wanted[0]}x{wanted[1]} "
                                       f"(model.tokenizer.init_args.encoder.init_args.image_size); make them equal")


def check_values(tree: dict) -> None:
    """Every check above on a parsed config (a plain dict of the subcommand's config)."""
    model = tree.get("model") or {}
    check_model(model)
    check_data(tree.get("data") or {}, model)


# -- mistyped keys ------------------------------------------------------------------------------------------------
NOT_ACCEPTED = re.compile(r"Option '(?P<option>[^']+)' is not accepted")
PARSER_KEY = re.compile(r'Parser key "(?P<key>[^"]+)"')
UNRECOGNIZED = re.compile(r"unrecognized arguments: --(?P<key>[^\s=]+)|does not accept \w+ '(?P<yaml>[^']+)'")


def closest(key: str, valid: Sequence[str]) -> str | None:
    """The valid key most like `key` (compared whole, then by its last part), or None."""
    names = [v for v in valid if not v.endswith(".help") and v != "help"]
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if match:
        return match[0]
    tail = key.rsplit(".", 1)[-1]
    by_tail = {n.rsplit(".", 1)[-1]: n for n in names if n.rsplit(".", 1)[0] == key.rpartition(".")[0]}
    match = difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=0.6)
    return by_tail[match[0]] if match else None


def unknown_key_line(message: str, valid: Sequence[str], nested: Sequence[str]) -> str:
    """One line for a jsonargparse error: the unknown key and the closest valid one when it is a mistyped key,
    else the error itself on one line. `valid`: the top parser's keys; `nested`: the keys of the class whose
    options were refused (jsonargparse's inner parser)."""
    option, parent, flag = NOT_ACCEPTED.search(message), PARSER_KEY.search(message), UNRECOGNIZED.search(message)
    if option:
        prefix = f"{parent['key']}.init_args." if parent else ""
        key = prefix + option["option"]
        guess = closest(option["option"], list(nested))
        guess = prefix + guess if guess else None
    elif flag:
        key = flag["key"] or flag["yaml"]
        guess = closest(key, list(valid))
    else:
        return "config error: " + " ".join(line.strip() for line in message.splitlines() if line.strip())
    hint = f"; did you mean {guess}?" if guess else ""
    return f"config error: unknown key {key}{hint}"
