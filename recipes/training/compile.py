"""Per-block `torch.compile`: compile each repeated transformer block in place, leave the glue eager.

A tokenizer step runs five networks (teacher, projections, pixel DiT, caption LM, text tower) joined by Python that
tokenizes texts and picks losses. Compiling the whole step would trace that Python too (graph breaks, recompiles on
every new caption length); compiling only the repeated blocks gets the fused kernels where the FLOPs are. Each
block is compiled with `nn.Module.compile`, in place, so parameter names and checkpoints are unchanged, and identical
blocks share one compiled graph (dynamo inlines module parameters as inputs), so compile time grows with the number
of distinct block types, not the depth.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def repeated_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every child of a ModuleList/Sequential whose class occurs there at least twice and that has
    children of its own: transformer blocks (timm's `blocks`, a DiT's, HF `layers`, open_clip `resblocks`), not the
    Linear layers of an MLP. Blocks inside a block already listed are not listed again."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        children = list(module.named_children())
        counts: dict[type, int] = {}
        for _, child in children:
            counts[type(child)] = counts.get(type(child), 0) + 1
        for child_name, child in children:
            if counts[type(child)] >= 2 and any(True for _ in child.children()):
                found.append((f"{name}.{child_name}" if name else child_name, child))
    return found


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> list[str]:
    """Compile every block `repeated_blocks` finds, in place (`torch.compile` keyword arguments pass through, e.g.
    mode="max-autotune" or backend="aot_eager"). Returns the names compiled."""
    blocks = repeated_blocks(model)
    for _, block in blocks:
        block.compile(**compile_kwargs)
    return [name for name, _ in blocks]
