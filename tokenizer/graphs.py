"""Compiled exports of a Tokenizer: encode, embed and decode as `torch.export` programs (and ONNX where it exports).

    DIR/encode.pt2   images [B, 3, H, W] in [0, 1] at the encoder's size -> indices [B, N(, G)] int64
    DIR/embed.pt2    indices -> Z [B, N, D]
    DIR/decode.pt2   indices, noise [B, *decoder space] -> images [B, 3, H', W'] in [0, 1] (fixed steps and sampler)
    DIR/*.onnx       the same graphs as ONNX, when `onnx` and `onnxscript` are installed and the graph converts

The batch dimension is dynamic; the image size is the one the tokenizer was trained at. Each program is checked
against eager mode on a batch of another size before it is written. These files are programs (code), not data:
`from_pretrained` never reads them; load them only from a source you trust (`torch.export.load`, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from armkit.tokenizer.model import Tokenizer

PROGRAMS = {"encode": "encode.pt2", "embed": "embed.pt2", "decode": "decode.pt2"}


class GraphError(RuntimeError):
    """A graph that cannot be exported, or that disagrees with eager mode."""


class EncodeGraph(nn.Module):
    """images [B, 3, H, W] in [0, 1], at the encoder's input size -> indices [B, N(, G)] int64."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tok(images).indices.long()


class EmbedGraph(nn.Module):
    """indices [B, N(, G)] -> Z [B, N, D] (Tokenizer.embed without its Python range check)."""

    def __init__(self, tok: Tokenizer) -> None:
        super().__init__()
        self.tok = tok

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        codes = self.tok.quantizer.fsq.indices_to_codes(indices.to(torch.int32))
        return self.tok.up(codes.to(next(self.tok.up.parameters()).dtype))


class DecodeGraph(nn.Module):
    """indices, noise -> images: embed, then the decoder's ODE sampler with `steps`, `sampler` and `guidance` fixed."""

    def __init__(self, tok: Tokenizer, *, steps: int, sampler: str, guidance: float) -> None:
        super().__init__()
        if tok.decoder is None:
            raise GraphError("this tokenizer has no decoder: there is no decode graph to export")
        self.embed, self.decoder = EmbedGraph(tok), tok.decoder
        self.steps, self.sampler, self.guidance = steps, sampler, guidance

    def forward(self, indices: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.decoder.sample(self.embed(indices), steps=self.steps, sampler=self.sampler,
                                   guidance=self.guidance, noise=noise)


def _inputs(tok: Tokenizer, batch: int, seed: int) -> dict[str, tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    device = next(tok.parameters()).device
    images = torch.rand(batch, 3, *tok.encoder.image_size, generator=gen).to(device)
    indices = tok.encode(images)
    out = {"encode": (images,), "embed": (indices,)}
    if tok.decoder is not None:
        noise = torch.randn(batch, *tok.decoder.space_shape, generator=gen).to(device)
        out["decode"] = (indices, noise)
    return out


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape or a.dtype != b.dtype:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _check(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> float:
    """Indices must match exactly; floats to `atol`."""
    diff = _max_difference(got, want)
    exact = not want.is_floating_point()
    if (exact and diff != 0) or diff > atol:
        raise GraphError(f"the exported {name} graph disagrees with eager mode (max difference {diff}); "
                         "export without graphs")
    return diff


@torch.no_grad()
def export_programs(tok: Tokenizer, directory: Path | str, *, steps: int = 25, sampler: str = "euler",
                    guidance: float = 1.0, onnx: bool | None = None, atol: float = 1e-4) -> dict[str, Any]:
    """Write encode/embed/decode as torch.export programs (dynamic batch), check each against eager mode on a batch
    of a size it was not exported with, and return their description for config.json. `onnx=None` also writes ONNX
    when the `onnx` and `onnxscript` packages are installed; True requires them."""
    directory = Path(directory)
    tok = tok.eval()
    modules = {"encode": EncodeGraph(tok), "embed": EmbedGraph(tok)}
    if tok.decoder is not None:
        modules["decode"] = DecodeGraph(tok, steps=steps, sampler=sampler, guidance=guidance)
    example, check = _inputs(tok, 2, 0), _inputs(tok, 3, 1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    described: dict[str, Any] = {"format": "torch.export", "torch": torch.__version__, "dynamic": ["batch"]}
    want_onnx = onnx if onnx is not None else _onnx_available()
    if want_onnx and not _onnx_available():
        raise GraphError("ONNX export needs the `onnx` and `onnxscript` packages: pip install 'armkit[onnx]'")
    for name, module in modules.items():
        shapes = tuple({0: batch} for _ in example[name])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                program = torch.export.export(module, example[name], dynamic_shapes=shapes, strict=False)
            except Exception as e:  # noqa: BLE001 - report which graph failed and why, then stop
                raise GraphError(f"torch.export could not export {name}: {type(e).__name__}: {e}") from None
        want = module(*check[name])
        diff = _check(name, program.module()(*check[name]), want, atol)
        path = directory / PROGRAMS[name]
        torch.export.save(program, str(path))
        entry = {"file": path.name, "inputs": [_shape(t) for t in example[name]], "max_diff_vs_eager": diff}
        if name == "decode":
            entry.update(steps=steps, sampler=sampler, guidance=guidance)
        if want_onnx:
            entry["onnx"] = _export_onnx(name, program, check[name], want, directory, atol)
        described[name] = entry
    return described


def _shape(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": ["B", *t.shape[1:]], "dtype": str(t.dtype).removeprefix("torch.")}


def _onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def _export_onnx(name: str, program: torch.export.ExportedProgram, inputs: tuple[torch.Tensor, ...],
                 want: torch.Tensor, directory: Path, atol: float) -> dict[str, Any]:
    """ONNX from the exported program; checked with onnxruntime when it is installed. A graph ONNX cannot express
    is recorded as such instead of failing the export (the torch.export program is still there)."""
    path = directory / f"{name}.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(program, inputs, str(path), dynamo=True, verbose=False)
    except Exception as e:  # noqa: BLE001 - ONNX is best effort: say why, keep the .pt2
        path.unlink(missing_ok=True)
        return {"file": None, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    entry: dict[str, Any] = {"file": path.name, "checked": False}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
        got = torch.from_numpy(session.run(None, feeds)[0])
        entry.update(checked=True, max_diff_vs_eager=_check(f"{name} ONNX", got.to(want.dtype), want.cpu(), atol))
    return entry
