"""The tokenizer's losses (paper Eq. 4) and LossSet, their weighted sum."""

from armkit.tokenizer.losses.base import Batch, Loss
from armkit.tokenizer.losses.caption import CaptionLoss
from armkit.tokenizer.losses.distill import DistillLoss
from armkit.tokenizer.losses.lossset import LossSet
from armkit.tokenizer.losses.pixel import PixelLoss
from armkit.tokenizer.losses.sigmoid import SigmoidLoss

__all__ = ["Batch", "CaptionLoss", "DistillLoss", "Loss", "LossSet", "PixelLoss", "SigmoidLoss"]
