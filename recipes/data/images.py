"""Opening one source image safely: size limits checked before decoding, EXIF orientation applied.

A decompression bomb (a small file that decodes to billions of pixels) or a 60000x1 strip must be refused before
Pillow allocates it, so `open_image` reads only the header, checks the pixel count and the aspect ratio, and only
then decodes. The writer turns `ImageRejected` (and any decoding error) into one skipped, counted sample.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps

MAX_PIXELS = 64_000_000  # 8000 x 8000: far above any training size, far below Pillow's bomb limit (~179M)
MAX_ASPECT = 20.0  # longer side / shorter side; a 20:1 panorama resized to --size 32 is already 640 x 32


class ImageRejected(ValueError):
    """The image is readable but past a size limit; the message says which."""


def check_size(size: tuple[int, int], *, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> None:
    """Raise `ImageRejected` for an empty image, more than `max_pixels` pixels or an aspect ratio past `max_aspect`."""
    w, h = size
    if w < 1 or h < 1:
        raise ImageRejected(f"image is {w}x{h} pixels")
    if w * h > max_pixels:
        raise ImageRejected(f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
    if max(w, h) / min(w, h) > max_aspect:
        raise ImageRejected(f"image is {w}x{h}, an aspect ratio over the limit of {max_aspect:g}:1")


def open_image(source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS,
               max_aspect: float = MAX_ASPECT) -> Image.Image:
    """A file path or encoded bytes -> a decoded PIL image, upright (EXIF orientation applied).

    Raises `ImageRejected` past the limits (checked on the header, before decoding) and whatever Pillow raises for
    an empty, truncated or unknown file.
    """
    if isinstance(source, bytes) and not source:
        raise ImageRejected("empty image file")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ImageRejected(f"decompression bomb: {e}") from None
    with img:
        check_size(img.size, max_pixels=max_pixels, max_aspect=max_aspect)
        img.load()  # decode now, so a truncated file fails here
        return ImageOps.exif_transpose(img)  # a new, upright image
