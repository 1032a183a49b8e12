"""The tokenizer's losses (paper Eq. 4) and LossSet, their weighted sum."""

from tokenizer.losses.base import Batch, Loss
from tokenizer.losses.caption import CaptionLoss
from tokenizer.losses.distill import DistillLoss
from tokenizer.losses.lossset import LossSet
from tokenizer.losses.pixel import PixelLoss
from tokenizer.losses.sigmoid import SigmoidLoss

__all__ = ["Batch", "CaptionLoss", "DistillLoss", "Loss", "LossSet", "PixelLoss", "SigmoidLoss"]
