"""Reconstruction metrics through torchmetrics: PSNR and SSIM always; LPIPS and rFID only from local weight files.

Nothing here downloads. LPIPS needs a torchvision backbone checkpoint the user has (e.g. alexnet-owt-7be5be79.pth):
it is read without unpickling (safetensors or torch.load(weights_only=True)) and handed to torchvision in place of
its download; torchmetrics' own LPIPS linear layers ship inside the torchmetrics wheel. rFID needs the torch-fidelity
package and its Inception weights file (torchmetrics' `feature_extractor_weights_path`). Without them the metric is
skipped and the reason is recorded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from armkit.common.weights import load_state_dict_file, sha256_file

LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}
LPIPS_MIN_SIZE = 64  # AlexNet's pooling leaves no pixels below about this size


def published_hash_prefix(weights_enum: Any) -> str:
    """torchvision names its files NAME-<first hex digits of the file's sha256>.pth."""
    return Path(weights_enum.url).stem.rsplit("-", 1)[-1]


def make_lpips(net: str, weights: str | Path | None, image_size: tuple[int, int]) -> tuple[Any, dict[str, Any]]:
    """(torchmetrics LPIPS metric or None, record for metrics.json)."""
    import torchvision
    from torchmetrics.image import LearnedPerceptualImagePatchSimilarity

    published = getattr(torchvision.models, LPIPS_BACKBONES[net]).DEFAULT
    if weights is None:
        return None, {"skipped": f"no --lpips-weights given: LPIPS needs a local torchvision {net} checkpoint "
                                 f"(e.g. {Path(published.url).name}); armkit never downloads it"}
    if min(image_size) < LPIPS_MIN_SIZE:
        return None, {"skipped": f"images are {list(image_size)}, below the {LPIPS_MIN_SIZE} px LPIPS' backbone needs"}
    state = load_state_dict_file(weights)  # no unpickling
    digest = sha256_file(weights)
    # torchvision would download `published`; it gets the user's tensors instead (and checks them strictly).
    with mock.patch.object(type(published), "get_state_dict", lambda self, *a, **k: state):
        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    record = {"net": net, "weights": str(Path(weights).resolve()), "sha256": digest,
              "is_torchvision_published_file": digest.startswith(published_hash_prefix(published))}
    return metric, record


def make_fid(weights: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """(torchmetrics FID metric or None, record for metrics.json)."""
    if weights is None:
        return None, {"skipped": "no --fid-weights given: rFID needs torch-fidelity's Inception weights as a local "
                                 "file (pt_inception-2015-12-05); armkit never downloads them"}
    if importlib.util.find_spec("torch_fidelity") is None:
        return None, {"skipped": "rFID needs the torch-fidelity package (pip install torch-fidelity)"}
    from torchmetrics.image.fid import FrechetInceptionDistance

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"--fid-weights {path} does not exist")
    metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))
    return metric, {"weights": str(path.resolve()), "sha256": sha256_file(path), "features": 2048}


class ReconstructionMetrics:
    """Accumulates PSNR, SSIM (and LPIPS, rFID when their weights are given) over (reconstruction, image) batches."""

    def __init__(self, *, image_size: tuple[int, int], lpips_net: str = "alex", lpips_weights: str | Path | None = None,
                 fid_weights: str | Path | None = None, device: torch.device | str = "cpu") -> None:
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(device)  # per image, then the mean
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(device)
        self.lpips, lpips_record = make_lpips(lpips_net, lpips_weights, image_size)
        self.fid, fid_record = make_fid(fid_weights)
        self.lpips = self.lpips.to(device) if self.lpips is not None else None
        self.fid = self.fid.to(device) if self.fid is not None else None
        self.records = {"lpips": lpips_record, "rfid": fid_record}

    def update(self, recon: torch.Tensor, images: torch.Tensor) -> None:
        """recon, images: [B, 3, H, W] in [0, 1]."""
        recon, images = recon.float().clamp(0, 1), images.float()
        self.psnr.update(recon, images)
        self.ssim.update(recon, images)
        if self.lpips is not None:
            self.lpips.update(recon, images)
        if self.fid is not None:
            self.fid.update(images, real=True)
            self.fid.update(recon, real=False)

    def compute(self) -> dict[str, float | None]:
        out = {"psnr": float(self.psnr.compute()), "ssim": float(self.ssim.compute()), "lpips": None, "rfid": None}
        if self.lpips is not None:
            out["lpips"] = float(self.lpips.compute())
        if self.fid is not None:
            out["rfid"] = float(self.fid.compute())
        return out
