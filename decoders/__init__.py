"""armkit decoders: quantized embeddings Z [B, N, D] -> images, trained with rectified flow.

`PixelDiT` (pixels, trains the tokenizer) and `LatentDiT` (VAE latents, renders) share one interface, so either can
decode the same tokens. The objective lives in `transport`, the ODE samplers and guidance in `samplers`.
"""

import tokenizer  # noqa: F401  first: tokenizer.model imports decoders.base, so load that cycle from its outer end
from decoders.base import Decoder
from decoders.dit import SIZES, DiT, PixelDiT
from decoders.flow import FlowDecoder
from decoders.latent import LatentDiT
from decoders.samplers import SAMPLERS, euler, guided, heun, solve, time_grid
from decoders.transport import TIME_SAMPLINGS, RectifiedFlow

__all__ = ["SAMPLERS", "SIZES", "TIME_SAMPLINGS", "Decoder", "DiT", "FlowDecoder", "LatentDiT", "PixelDiT",
           "RectifiedFlow", "euler", "guided", "heun", "solve", "time_grid"]
