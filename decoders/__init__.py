"""armkit decoders: quantized embeddings Z [B, N, D] -> images, trained with rectified flow.

`PixelDiT` (pixels, trains the tokenizer) and `LatentDiT` (VAE latents, renders) share one interface, so either can
decode the same tokens. The objective lives in `transport`, the ODE samplers and guidance in `samplers`.
"""

from armkit.decoders.base import Decoder
from armkit.decoders.dit import SIZES, DiT, PixelDiT
from armkit.decoders.flow import FlowDecoder
from armkit.decoders.latent import LatentDiT
from armkit.decoders.samplers import SAMPLERS, euler, guided, heun, solve, time_grid
from armkit.decoders.transport import TIME_SAMPLINGS, RectifiedFlow

__all__ = ["SAMPLERS", "SIZES", "TIME_SAMPLINGS", "Decoder", "DiT", "FlowDecoder", "LatentDiT", "PixelDiT",
           "RectifiedFlow", "euler", "guided", "heun", "solve", "time_grid"]
