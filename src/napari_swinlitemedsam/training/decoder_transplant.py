"""Optional: start the student's skip-connection upscaling path as a copy of the teacher's.

LiteMedSAM upscales the transformer output ``src`` (256 @ 64²) with
``GELU(ConvT_b(GELU(LN_a(ConvT_a(src)))))`` (ConvT = 2x2 transposed convolution, stride 2). The
Swin-LiteMedSAM decoder's path has different pieces in a different order::

    up1 = GELU(T1(GELU(L1(C1(cat(src, coarse))))))      C1: 1x1 conv 512 -> 256, L1: LayerNorm
    up2 = GELU(T2(GELU(L2(C2(cat(up1, fs0))))))         C2: 1x1 conv 256 -> 64,  L2: LayerNorm

:func:`emulate_teacher_upscaling` sets these weights so that ``up2`` reproduces the teacher's
output almost exactly while the skip inputs ``coarse`` and ``fs0`` get zero weight (they start
contributing as soon as training moves those weights):

* ``T2 = ConvT_b`` and ``L2 = LN_a``, so ``C2``'s output only needs to equal ``ConvT_a(src)``
  up to a positive scale per pixel (LayerNorm ignores it);
* ``T1`` outputs ``[z; -z]`` and ``C2`` takes the difference of the two halves: since
  ``GELU(z) - GELU(-z) = z`` exactly, ``C2``'s output is ``z``;
* ``C1`` rotates ``src`` onto the 253 directions that matter most to ``ConvT_a`` (the three
  smallest singular directions of its 256 x 256 matrix, with singular values of 1e-3 to 2e-3,
  are dropped), adds a channel holding minus the sum of those 253, so that the LayerNorm's mean
  is exactly zero, and two constant channels ``+K`` and ``-K``, which dominate its per-pixel
  scale: ``L1`` becomes a fixed linear map up to a scale that varies by far less than 1 %
  between pixels. The LayerNorm's shift of 5 keeps the following GELU on its almost linear
  part, and ``T1`` maps the 253 channels back through ``ConvT_a``. The rotation is chosen within
  the kept subspace so that the shift's contribution is the same for the four output pixels of
  each input pixel, and can therefore be cancelled by ``T1``'s per-channel bias.

The remaining errors are the dropped directions, the GELU's slight curvature near 5 and the
tiny variation of the LayerNorm's scale: on the LiteMedSAM parity image, with identical
embeddings and box prompts, the decoder logits differ by at most 0.016 (they span -57..23) and
the masks are identical. This is an *option* (``skip_path="emulate"`` in
:func:`.transplant.initialise_from_teacher`); the published recipe trains the skip path from
scratch, which is the default.
"""

from __future__ import annotations

import torch
from torch import nn

CONSTANT = 400.0
GELU_SHIFT = 5.0


@torch.no_grad()
def emulate_teacher_upscaling(
    student_decoder: nn.Module,
    teacher_decoder: nn.Module,
    constant: float = CONSTANT,
    prefix: str = "mask_decoder",
) -> list[str]:
    """Set ``output_upscaling1/2`` of a SkipMaskDecoder from a SAM decoder's ``output_upscaling``.

    Returns the state-dict keys that were set.
    """
    conv_a, norm_a, _, conv_b, _ = teacher_decoder.output_upscaling
    c1, l1, _, t1, _ = student_decoder.output_upscaling1
    c2, l2, _, t2, _ = student_decoder.output_upscaling2
    width = conv_a.in_channels
    middle = conv_a.out_channels
    if c1.in_channels != 2 * width or t1.out_channels != 2 * middle or c2.out_channels != middle:
        raise ValueError("the decoders do not have the published widths; cannot emulate")
    kept = width - 3

    # ConvT_a as a (in, out * 4) matrix: the 2x2 output patch of each input pixel.
    matrix = conv_a.weight.double().reshape(width, -1)
    left, _, _ = torch.linalg.svd(matrix, full_matrices=True)
    basis = left[:, :kept].T  # (kept, width): orthonormal rows, the kept input directions
    rotation = _rotation_with_even_patches(basis, conv_a.weight.double())

    c1.weight.zero_()
    c1.weight[:kept, :width, 0, 0] = rotation.float()
    c1.weight[kept, :width, 0, 0] = -rotation.sum(0).float()
    c1.bias.zero_()
    c1.bias[kept + 1] = constant
    c1.bias[kept + 2] = -constant
    l1.weight.fill_(1.0)
    l1.bias.fill_(GELU_SHIFT)

    # The LayerNorm's input has zero mean, and its scale is ~ K sqrt(2 / C) for C channels.
    sigma = constant * (2.0 / width) ** 0.5
    weights = sigma * (rotation @ matrix)  # (kept, out * 4)
    weights = weights.reshape(kept, middle, *conv_a.kernel_size)
    # GELU(n + 5) ~ n + 5: the shift adds 5 * sum_k weights[k], equal over each 2x2 patch.
    shift_terms = GELU_SHIFT * weights.sum(0)  # (out, 2, 2)
    bias = conv_a.bias.double() - shift_terms.mean((1, 2))

    t1.weight.zero_()
    t1.weight[:kept, :middle] = weights.float()
    t1.weight[:kept, middle:] = -weights.float()
    t1.bias[:middle] = bias.float()
    t1.bias[middle:] = -bias.float()

    c2.weight.zero_()
    identity = torch.eye(middle)
    c2.weight[:, :middle, 0, 0] = identity
    c2.weight[:, middle : 2 * middle, 0, 0] = -identity
    c2.bias.zero_()
    l2.weight.copy_(norm_a.weight)
    l2.bias.copy_(norm_a.bias)
    t2.weight.copy_(conv_b.weight)
    t2.bias.copy_(conv_b.bias)
    keys = []
    for name, module in (
        ("output_upscaling1", student_decoder.output_upscaling1),
        ("output_upscaling2", student_decoder.output_upscaling2),
    ):
        keys += [f"{prefix}.{name}.{key}" for key in module.state_dict()]
    return keys


def _rotation_with_even_patches(basis: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``G @ basis`` of the same subspace whose channel sum ``1^T G basis``
    gives, through the transposed convolution ``weight`` (in, out, 2, 2), equal values at the
    four positions of each output patch."""
    kept = basis.shape[0]
    differences = (weight[:, :, :, :] - weight[:, :, :1, :1]).reshape(weight.shape[0], -1)
    constraints = basis @ differences  # (kept, out * 4): g must be orthogonal to its columns
    left, singular, _ = torch.linalg.svd(constraints, full_matrices=True)
    rank = int((singular > singular.max() * 1e-10).sum())
    if rank >= kept:
        raise ValueError("no rotation makes the patch sums equal; cannot emulate")
    target = left[:, -1] * kept**0.5  # a unit direction orthogonal to every constraint, scaled
    ones = torch.ones(kept, dtype=basis.dtype)
    # Householder reflection G (symmetric, orthogonal) with G @ 1 = target, so 1^T G = target^T.
    direction = ones - target
    if float(direction.norm()) < 1e-12:
        return basis
    direction = direction / direction.norm()
    reflection = torch.eye(kept, dtype=basis.dtype) - 2.0 * torch.outer(direction, direction)
    return reflection @ basis
