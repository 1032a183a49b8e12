"""Checks on an AR export's config.json or an ARModule checkpoint, run before any model is built.

A config file is input, not code: `load_ar` (and so `armkit generate`, `armkit eval-ar`, `armkit export`) reads it
through `read_config` / `check_checkpoint`, which refuse, in one line naming the file and the key,

    JSON that is not an armkit.ar config     a config of the wrong JSON type, NaN / Infinity / 1e999, nesting past 32
                                              levels (never a RecursionError), `format_version` not an integer
    values out of range                       zero heads, negative widths, a width the heads do not divide, vocab
                                              and codebook sizes <= 0, an unknown head, dtype or model_type
    a model too big for this machine          the parameter count estimated from the config against a cap
                                              (64 GB, or the machine's memory if less; ARMKIT_MAX_MODEL_GB):
                                              "needs 4.4 TB (... cap 64.0 GB; ARMKIT_MAX_MODEL_GB raises it)"
    a checkpoint of the wrong shape           no `state_dict`, keys that are not strings, values that are not tensors

The generic helpers (ConfigValueError, integer test, iterative depth bound) are the tokenizer export's
(tokenizer/export_checks.py). The AR and RL training recipes run `check_model_spec` on their ARModel too
(recipes/training/config_checks.py), so a model too big or out of range is refused before training as well.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from armkit.tokenizer.export_checks import ConfigValueError, check_depth, is_int, require

FORMAT, FORMAT_VERSION = "armkit.ar", 1
MAX_MODEL_GB_ENV, DEFAULT_MAX_MODEL_GB = "ARMKIT_MAX_MODEL_GB", 64.0  # a 7B LM in float32 (the paper's) is ~32 GB
HEADS = ("full", "factorized")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MIN_TEXT_VOCAB = 258  # ByteCodec's 256 bytes + end-of-text + padding: the LM's vocabulary when the config has none
MAX_GRID = 1024  # shape tokens H1..Hmax, W1..Wmax: a 1024-token side is far past any tokenizer's grid
# transformers' names for the same sizes across model types (attribute_map covers most; these are the raw keys)
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
HEAD_KEYS = ("num_attention_heads", "n_head")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
POSITIVE_KEYS = (*WIDTH_KEYS, *LAYER_KEYS, *HEAD_KEYS, "num_key_value_heads", "intermediate_size", "n_inner",
                 "vocab_size", "head_dim", "max_position_embeddings", "n_positions", *EXPERT_KEYS)
# Bounds checked before transformers sees the config: its config classes expand some sizes into lists (qwen2 builds
# one `layer_types` entry per layer: 10**7 layers take 45 s before a weight exists), and no LM comes near these.
MAX_LAYERS, MAX_POSITIONS, MAX_SIZE = 4096, 2**24, 2**31


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def physical_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def max_model_bytes() -> float:
    """The cap on the memory a model may take: $ARMKIT_MAX_MODEL_GB gigabytes, by default 64 GB or this machine's
    memory when it has less (every model is built in host memory first)."""
    text = os.environ.get(MAX_MODEL_GB_ENV, "")
    if not text:
        return min(DEFAULT_MAX_MODEL_GB * 1e9, physical_memory() or math.inf)
    try:
        value = float(text)
    except ValueError:
        raise ConfigValueError(f"{MAX_MODEL_GB_ENV}={text!r} is not a number of gigabytes") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigValueError(f"{MAX_MODEL_GB_ENV}={text!r} must be a finite number of gigabytes > 0")
    return value * 1e9


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_finite(value: Any, where: str) -> None:
    """Every number anywhere in `value` finite (1e999 parses as inf even with parse_constant)."""
    stack = [(value, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigValueError(f"{at} = {node!r}: must be a finite number")
        if isinstance(node, dict):
            stack.extend((v, f"{at}.{k}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(node))


def _first(config: dict, keys: tuple[str, ...]) -> Any:
    return next((config[k] for k in keys if config.get(k) is not None), None)


def need(ok: bool, where: str, key: str, value: Any, want: str) -> None:
    """`require` for a key inside a file (`where` the file) or inside a training config (`where` empty)."""
    if not ok:
        raise ConfigValueError(f"{where}: {key} = {value!r}: {want}" if where else f"{key} = {value!r}: {want}")


def need_object(value: Any, where: str, key: str) -> None:
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(type(value), "a number")
        raise ConfigValueError(f"{where + ': ' if where else ''}{key} is {kind}, not an object")


def check_lm_config(config: Any, where: str, key: str, *, byte_text: bool = True) -> None:
    """The transformers config at `key` (`config:` for random init, or the full config an export of a `path:` model
    holds): the sizes transformers would build, checked before transformers sees them. `byte_text`: the LM reads
    UTF-8 bytes (no text tokenizer), so its vocabulary holds at least 258 ids."""
    need_object(config, where, key)
    model_type = config.get("model_type")
    need(isinstance(model_type, str) and bool(model_type), where, f"{key}.model_type", model_type,
         "must name a transformers model type (e.g. qwen2, llama)")
    for name in POSITIVE_KEYS:
        if config.get(name) is not None:
            need(is_int(config[name]) and config[name] >= 1, where, f"{key}.{name}", config[name],
                 "must be an integer >= 1")
            need(config[name] <= MAX_SIZE, where, f"{key}.{name}", config[name], f"must be at most {MAX_SIZE:,}")
    for names, most in ((LAYER_KEYS, MAX_LAYERS), (("max_position_embeddings", "n_positions"), MAX_POSITIONS)):
        for name in names:
            if config.get(name) is not None:
                need(config[name] <= most, where, f"{key}.{name}", config[name], f"must be at most {most:,}")
    width, heads = _first(config, WIDTH_KEYS), _first(config, HEAD_KEYS)
    if width is not None and heads is not None and config.get("head_dim") is None:
        name = next(k for k in WIDTH_KEYS if config.get(k) is not None)
        need(width % heads == 0, where, f"{key}.{name}", width, f"must be divisible by the {heads} attention heads")
    kv = config.get("num_key_value_heads")
    if kv is not None and heads is not None:
        need(heads % kv == 0, where, f"{key}.num_key_value_heads", kv, f"must divide the {heads} attention heads")
    if byte_text and config.get("vocab_size") is not None:
        need(config["vocab_size"] >= MIN_TEXT_VOCAB, where, f"{key}.vocab_size", config["vocab_size"],
             f"must be >= {MIN_TEXT_VOCAB} (byte text needs 256 bytes + 2)")


def resolved_lm_config(config: dict, where: str, key: str = "config") -> Any:
    """transformers' config object for `config` (no weights: cheap), with the defaults ARModel applies."""
    from transformers import CONFIG_MAPPING, AutoConfig

    at = f"{where}: {key}" if where else key
    if config["model_type"] not in CONFIG_MAPPING:
        raise ConfigValueError(f"{at}.model_type = {config['model_type']!r}: not a model type this transformers "
                               "knows (e.g. qwen2, qwen3, llama)")
    args = dict(config)
    args.setdefault("vocab_size", MIN_TEXT_VOCAB)
    try:
        return AutoConfig.for_model(**args)
    except Exception as e:  # noqa: BLE001 -- transformers' own validation of a tampered config: one line either way
        message = " ".join(str(e).split())
        raise ConfigValueError(f"{at} is refused by transformers ({type(e).__name__}: {message})") from None


def estimate_parameters(lm: Any, *, codebook_size: int, max_grid: int, head: str, levels: list[int] | None) -> int:
    """Parameters of the ARModel built from `lm` (a transformers config): embeddings, the LM's decoder layers
    (attention with its key/value heads, a gated MLP per expert), its output head, and ARModel's own tables and
    heads. Within 1% for the qwen2 / llama families (biases and norms aside)."""
    width = int(getattr(lm, "hidden_size", 0) or 0)
    layers = int(getattr(lm, "num_hidden_layers", 0) or 0)
    heads = int(getattr(lm, "num_attention_heads", 0) or 1)
    kv = int(getattr(lm, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(lm, "head_dim", None) or max(width // heads, 1))
    inner = int(getattr(lm, "intermediate_size", None) or getattr(lm, "n_inner", None) or 4 * width)
    vocab = int(getattr(lm, "vocab_size", 0) or 0)
    experts = max([int(getattr(lm, k, None) or 1) for k in EXPERT_KEYS])  # a mixture of experts: one MLP each
    attention = width * heads * head_dim * 2 + width * kv * head_dim * 2  # q, o; k, v
    per_layer = attention + 3 * width * inner * experts + 2 * width
    special = 6 + 2 * max_grid
    visual_out = codebook_size if head == "full" else sum(levels or ())
    return (2 * vocab * width + layers * per_layer + 2 * special * width + codebook_size * width
            + width * visual_out)


def check_model_spec(spec: Any, where: str, key: str, *, exported: bool) -> None:
    """An ARModel spec ({"class_path", "init_args"}) at `key` of `where` (a file; empty for a training config):
    types, ranges and the memory it would take. `exported`: an export folder's spec, always `config:` form (a
    checkpoint or a recipe may name a local `path:` folder)."""
    need_object(spec, where, key)
    need(isinstance(spec.get("class_path"), str), where, f"{key}.class_path", spec.get("class_path"),
         "must be a string")
    args = spec.get("init_args")
    at = f"{key}.init_args"
    need_object(args, where, at)
    check_finite(args, f"{where}: {at}" if where else at)
    codebook = args.get("codebook_size")
    need(is_int(codebook) and codebook >= 2, where, f"{at}.codebook_size", codebook, "must be an integer >= 2")
    levels = args.get("levels")
    if levels is not None:
        need(isinstance(levels, list) and bool(levels) and all(is_int(v) and v >= 2 for v in levels), where,
             f"{at}.levels", levels, "must be a list of integers >= 2")
        need(math.prod(levels) == codebook, where, f"{at}.levels", levels,
             f"give {math.prod(levels)} codes, not codebook_size={codebook}")
    head = args.get("head", "full")
    need(head in HEADS, where, f"{at}.head", head, f"must be one of {list(HEADS)}")
    need(head != "factorized" or levels is not None, where, f"{at}.levels", levels, "the factorized head needs them")
    max_grid = args.get("max_grid", 32)
    need(is_int(max_grid) and 1 <= max_grid <= MAX_GRID, where, f"{at}.max_grid", max_grid,
         f"must be an integer in [1, {MAX_GRID}]")
    dtype = args.get("dtype", "float32")
    need(dtype in DTYPE_BYTES, where, f"{at}.dtype", dtype, f"must be one of {sorted(DTYPE_BYTES)}")
    seed = args.get("seed")
    need(seed is None or (is_int(seed) and 0 <= seed < 2**63), where, f"{at}.seed", seed,
         "must be null or an integer >= 0")
    config, path = args.get("config"), args.get("path")
    text_tokenizer = args.get("text_tokenizer")
    if exported:
        need(path is None, where, f"{at}.path", path, "an export holds the LM's config:, never a path:")
        need(text_tokenizer in (None, "text_tokenizer"), where, f"{at}.text_tokenizer", text_tokenizer,
             "an export's text tokenizer is its own text_tokenizer/ folder (or null)")
    else:
        need(path is None or (isinstance(path, str) and bool(path)), where, f"{at}.path", path,
             "must be a folder name")
        need(text_tokenizer is None or isinstance(text_tokenizer, str), where, f"{at}.text_tokenizer",
             text_tokenizer, "must be null or a folder name")
    need((config is None) != (path is None), where, f"{at}.path", path,
         "give exactly one of config: (random init) and path: (a local model folder)")
    if config is None:
        return  # a local transformers folder: its size is its own config's, read when it is loaded
    check_lm_config(config, where, f"{at}.config", byte_text=text_tokenizer is None)
    lm = resolved_lm_config(config, where, f"{at}.config")
    params = estimate_parameters(lm, codebook_size=codebook, max_grid=max_grid, head=head, levels=levels)
    need_bytes, cap = params * DTYPE_BYTES[dtype], max_model_bytes()
    if need_bytes > cap:
        raise ConfigValueError(f"{where + ': ' if where else ''}{at}.config: this model needs "
                               f"{human_bytes(need_bytes)} ({params:,} {dtype} parameters; cap {human_bytes(cap)}; "
                               f"{MAX_MODEL_GB_ENV} raises it)")


def check_tokenizer_record(record: Any, where: str, key: str) -> None:
    """The codes' tokenizer as the model records it (path, fingerprint, sizes); used to find and check it."""
    if record is None:
        return
    need_object(record, where, key)
    for name in ("path", "fingerprint"):
        if name in record:
            require(isinstance(record[name], str), where, f"{key}.{name}", record[name], "must be a string")
    for name in ("codebook_size", "num_tokens", "embed_dim"):
        if name in record:
            require(is_int(record[name]) and record[name] >= 1, where, f"{key}.{name}", record[name],
                    "must be an integer >= 1")
    for name in ("grid", "image_size"):
        if name in record:
            require(isinstance(record[name], list) and len(record[name]) == 2 and all(
                is_int(v) and v >= 1 for v in record[name]), where, f"{key}.{name}", record[name],
                "must be two integers >= 1")
    if "levels" in record:
        require(isinstance(record["levels"], list) and all(is_int(v) and v >= 2 for v in record["levels"]), where,
                f"{key}.levels", record["levels"], "must be a list of integers >= 2")


def check_vocab(vocab: Any, where: str, spec: dict) -> None:
    """config.json's `vocab` summary beside the spec: sizes > 0 that agree with it."""
    need_object(vocab, where, "vocab")
    for key in ("text", "special", "visual", "max_grid"):
        if key in vocab:
            require(is_int(vocab[key]) and vocab[key] >= 1, where, f"vocab.{key}", vocab[key],
                    "must be an integer >= 1")
    args = spec["init_args"]
    if "visual" in vocab:
        require(vocab["visual"] == args["codebook_size"], where, "vocab.visual", vocab["visual"],
                f"must equal model.init_args.codebook_size ({args['codebook_size']})")
    if "head" in vocab:
        require(vocab["head"] == args.get("head", "full"), where, "vocab.head", vocab["head"],
                f"must equal model.init_args.head ({args.get('head', 'full')!r})")


CHECKPOINT_FACTOR = 4  # a training checkpoint holds the weights and AdamW's two moments (3x), and some slack


def check_file_size(path: Path, *, checkpoint: bool = False) -> None:
    """A weights file larger than the memory cap (a checkpoint: 4x the cap, for its optimizer state) is refused
    before a byte of it is read."""
    size = path.stat().st_size
    cap = max_model_bytes() * (CHECKPOINT_FACTOR if checkpoint else 1)
    if size > cap:
        what = f"{CHECKPOINT_FACTOR} x the model cap, for optimizer state" if checkpoint else "the model cap"
        raise ConfigValueError(f"{path}: the file is {human_bytes(size)}, over {human_bytes(cap)} ({what}; "
                               f"{MAX_MODEL_GB_ENV} raises it)")


def read_config(path: Path) -> dict:
    """An AR export's config.json, parsed and checked; raises ConfigValueError naming the file and the key."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ConfigValueError(f"{path} is nested too deeply; not an AR export") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise ConfigValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConfigValueError(f"{path} holds a JSON {type(config).__name__}, not an object: not an AR export")
    check_depth(config, str(path))
    fv = config.get("format_version")
    require(is_int(fv), str(path), "format_version", fv, "must be an integer")
    if config.get("format") != FORMAT or fv > FORMAT_VERSION or fv < 1:
        raise ConfigValueError(f"{path}: not an {FORMAT} export this armkit reads (format {config.get('format')!r} "
                               f"version {fv!r}; this armkit reads {FORMAT} versions 1 to {FORMAT_VERSION})")
    where = str(path)
    check_model_spec(config.get("model"), where, "model", exported=True)
    check_tokenizer_record(config.get("tokenizer"), where, "tokenizer")
    if "vocab" in config:
        check_vocab(config["vocab"], where, config["model"])
    if "source" in config:
        require(isinstance(config["source"], str), where, "source", config["source"], "must be a string")
    return config


def check_checkpoint(checkpoint: Any, path: Path) -> None:
    """An ARModule checkpoint (read with torch.load(weights_only=True)): its spec and its tensors' container."""
    import torch

    where = str(path)
    need_object(checkpoint, where, "the checkpoint")
    check_depth({k: v for k, v in checkpoint.items() if k != "state_dict"}, where)
    armkit = checkpoint.get("armkit")
    need_object(armkit, where, "armkit")
    check_model_spec(armkit.get("ar"), where, "armkit.ar", exported=False)
    check_tokenizer_record(armkit.get("codes_tokenizer"), where, "armkit.codes_tokenizer")
    if "state_dict" not in checkpoint:
        raise ConfigValueError(f"{where}: key 'state_dict' is missing: not a training checkpoint")
    state = checkpoint["state_dict"]
    need_object(state, where, "state_dict")
    for key, value in state.items():
        require(isinstance(key, str), where, "state_dict key", key, "must be a string")
        if not isinstance(value, torch.Tensor):
            raise ConfigValueError(f"{where}: state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
    step = checkpoint.get("global_step")
    require(step is None or is_int(step), where, "global_step", step, "must be an integer")
    if not any(k.startswith("model.") for k in state):
        raise ConfigValueError(f"{where}: state_dict has no 'model.*' key: not an ARModule checkpoint")
