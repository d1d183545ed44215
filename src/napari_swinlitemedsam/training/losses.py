"""Training losses: segmentation (Dice + BCE + IoU regression) and feature distillation (L1).

Shapes: mask logits and targets are (N, 1, 256, 256) (targets 0/1 float); IoU predictions
(N, 1). Every loss returns a scalar tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

DICE_SMOOTHING = 1e-5


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice with squared predictions, per mask, averaged over masks.

    ``1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s)`` with ``p = sigmoid(logits)`` and
    ``s = 1e-5``, summed over the pixels of each (1, H, W) mask (the form MONAI's
    ``DiceLoss(sigmoid=True, squared_pred=True)`` computes, which the published training used).
    """
    probabilities = torch.sigmoid(logits.float())
    targets = targets.float()
    dims = tuple(range(1, logits.ndim))
    intersection = (probabilities * targets).sum(dims)
    denominator = probabilities.pow(2).sum(dims) + targets.pow(2).sum(dims)
    return (1.0 - (2.0 * intersection + DICE_SMOOTHING) / (denominator + DICE_SMOOTHING)).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, 1) IoU of the thresholded prediction (logit > 0) with the 0/1 targets; no gradient.

    An empty prediction of an empty target counts as IoU 1.
    """
    with torch.no_grad():
        predicted = logits > 0
        truth = targets > 0.5
        dims = tuple(range(1, logits.ndim))
        intersection = (predicted & truth).sum(dims).float()
        union = (predicted | truth).sum(dims).float()
        iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return iou[:, None]


@dataclass(frozen=True)
class SegmentationLoss:
    """The parts of the segmentation loss for one batch (tensors with gradient)."""

    dice: torch.Tensor
    bce: torch.Tensor
    iou_mse: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.dice + self.bce + self.iou_mse

    def as_floats(self) -> dict[str, float]:
        return {
            name: float(value.detach())
            for name, value in (
                ("loss", self.total),
                ("dice", self.dice),
                ("bce", self.bce),
                ("iou_mse", self.iou_mse),
            )
        }


def segmentation_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, targets: torch.Tensor
) -> SegmentationLoss:
    """Dice + BCE on (N, 1, 256, 256) logits; MSE between (N, 1) ``iou_pred`` and the real IoU."""
    targets = targets.float()
    logits = logits.float()
    return SegmentationLoss(
        dice=soft_dice_loss(logits, targets),
        bce=F.binary_cross_entropy_with_logits(logits, targets),
        iou_mse=F.mse_loss(iou_pred.float(), mask_iou(logits, targets)),
    )


def feature_l1(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative L1: ``mean |predicted - target| / mean |target|`` (the scale is not differentiated).

    Dividing by the target's mean magnitude puts every stage on the same footing, whatever the
    scale of its activations; 1.0 is what an all-zero prediction scores.
    """
    target = target.to(predicted.dtype)
    scale = target.abs().mean().detach().clamp(min=1e-6)
    return (predicted - target).abs().mean() / scale


def distillation_loss(
    predicted: list[torch.Tensor] | tuple[torch.Tensor, ...],
    targets: list[torch.Tensor] | tuple[torch.Tensor, ...],
    weights: tuple[float, ...] | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Weighted sum of :func:`feature_l1` over paired maps; also returns each term as a float."""
    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predicted maps but {len(targets)} targets")
    weights = weights or (1.0,) * len(predicted)
    terms = [feature_l1(p.float(), t.float()) for p, t in zip(predicted, targets)]
    total = sum(w * term for w, term in zip(weights, terms))
    return total, [float(term.detach()) for term in terms]
