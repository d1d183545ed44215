"""Start the Swin-LiteMedSAM student close to the LiteMedSAM teacher.

Three kinds of initialisation, applied by :func:`initialise_from_teacher`:

1. **Identical tensors** (:func:`copy_matching_tensors`): every student tensor whose name and
   shape equal a teacher tensor's is copied. The list is computed, not hard-coded: the
   encoder's 1x1-conv stem (3 -> 32 -> 64 with BatchNorm) and neck, the whole prompt encoder,
   and from the mask decoder the two-way transformer, the IoU and mask tokens, the four
   hypernetwork MLPs and the IoU head (149 tensors).
2. **Corresponding blocks** (:func:`transplant_encoder_blocks`), following the table in
   :mod:`.teacher`. Both networks build an attention block from the same pieces (pre-norm
   window attention with head size 32, a depthwise 3x3 conv + BN without residual, a pre-norm
   4x MLP), so a teacher block's LayerNorms, local conv and MLP fit a student block of the same
   width exactly:

   * stage 1 (2 blocks @ 128, 2 heads) <- the teacher's 2 blocks @ 128 (4 heads): the 2 heads
     with the largest output weight norm are kept;
   * stage 2 (2 blocks @ 160) has no teacher counterpart: its blocks start as identities
     (zero attention output and MLP output, identity depthwise conv and BatchNorm);
   * stage 3 (6 blocks @ 320, 5 heads) <- the teacher's 6 blocks @ 160 (5 heads), run on two
     identical copies of the 160 channels: LayerNorm of ``[x; x]`` equals ``[LN(x); LN(x)]``,
     so duplicated norms, halved query/key/value weights, duplicated output rows, duplicated
     depthwise kernels and block-diagonal MLP weights reproduce the 160-wide block in both
     halves; its patch merging (160 -> 320) duplicates the channels;
   * stage 4 (2 blocks @ 320, 10 heads) <- the teacher's 2 blocks @ 320 (10 heads).

   What does not carry over: the teacher's query bias (the student's qkv has no bias; the key
   bias cancels in the softmax and the value bias is folded into the output bias), its
   per-head position biases (the student shares one table over heads: the teacher's, averaged
   over the kept heads), and its window layout (7 / 14 / 7 with zero padding, against the
   student's 8 with shifted windows).
3. **Least-squares patch mergings** (:func:`fit_mergings`): the student's stage 1, 2 and 4
   mergings are linear maps (space-to-depth then Linear); each is fitted in closed form (ridge
   regression over pixels of calibration images) to what the teacher computes between the same
   two points (MBConvs + conv merging, conv merging, conv merging).

Everything else keeps PyTorch's random initialisation; in particular the decoder's skip path
(``neck``, ``output_upscaling1``, ``output_upscaling2``) is trained from scratch, unless
``skip_path="emulate"`` asks :mod:`.decoder_transplant` to set the two upscaling blocks so that
they reproduce the teacher's upscaling (the skip inputs then start with zero weight).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from napari_swinlitemedsam.training.teacher import teacher_taps

HEAD_DIM = 32


@dataclass
class TransplantReport:
    """Which student tensors were initialised how (full state-dict keys)."""

    copied: list[str] = field(default_factory=list)
    transplanted: list[str] = field(default_factory=list)
    identity: list[str] = field(default_factory=list)
    least_squares: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self, total: int | None = None) -> str:
        lines = [
            f"copied (same name and shape): {len(self.copied)} tensors",
            f"transplanted from corresponding teacher blocks: {len(self.transplanted)} tensors",
            f"identity blocks (no teacher counterpart): {len(self.identity)} tensors",
            f"fitted by least squares: {len(self.least_squares)} tensors",
        ]
        if total is not None:
            touched = len(set(self.copied + self.transplanted + self.identity + self.least_squares))
            lines.append(f"random initialisation: {total - touched} of {total} tensors")
        return "\n".join(lines + self.notes)

    def as_dict(self) -> dict:
        return {
            "copied": self.copied,
            "transplanted": self.transplanted,
            "identity": self.identity,
            "least_squares": self.least_squares,
            "notes": self.notes,
        }


@torch.no_grad()
def copy_matching_tensors(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy every teacher tensor whose key and shape exist in the student; return the keys."""
    student_state = student.state_dict()
    copied = []
    for key, value in teacher.state_dict().items():
        target = student_state.get(key)
        if target is not None and target.shape == value.shape:
            target.copy_(value)
            copied.append(key)
    return copied


def _swin_blocks(stage: nn.Module) -> list[nn.Module]:
    """The blocks of a Swin stage in order (regular, shifted, regular, shifted, ...)."""
    return [block for pair in stage.blocks for block in pair]


def _ranked_heads(attention: nn.Module, count: int) -> list[int]:
    """The ``count`` teacher heads with the largest ||W_proj[:, head] W_v[head]||, in order."""
    heads = attention.num_heads
    d = attention.head_dim
    weight = attention.qkv.weight.reshape(heads, 3, d, -1)
    scores = []
    for head in range(heads):
        value = weight[head, 2]
        projection = attention.proj.weight[:, head * d : (head + 1) * d]
        scores.append(float(torch.linalg.matrix_norm(projection @ value)))
    ranked = sorted(range(heads), key=lambda h: -scores[h])[:count]
    return sorted(ranked)


def _shared_position_table(
    biases: torch.Tensor, heads: list[int], teacher_window: int, student_window: int
) -> torch.Tensor:
    """A (2w-1, 2w-1) table over signed offsets from the teacher's per-head |offset| biases."""
    size = 2 * student_window - 1
    offsets = (torch.arange(size) - (student_window - 1)).abs().clamp(max=teacher_window - 1)
    index = offsets[:, None] * teacher_window + offsets[None, :]
    return biases[heads].mean(0)[index]


@torch.no_grad()
def _transplant_block(student_block: nn.Module, teacher_block: nn.Module, duplicate: bool) -> None:
    """Set one Swin block from one TinyViT block (see the module docstring)."""
    s_attention_norm = student_block.attention_block.fn.norm
    s_attention = student_block.attention_block.fn.fn
    t_attention = teacher_block.attn
    width = t_attention.norm.weight.shape[0]
    copies = 2 if duplicate else 1

    def repeat(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t] * copies, dim=0)

    s_attention_norm.weight.copy_(repeat(t_attention.norm.weight))
    s_attention_norm.bias.copy_(repeat(t_attention.norm.bias))

    student_heads = s_attention.heads
    heads = _ranked_heads(t_attention, student_heads)
    d = HEAD_DIM
    t_qkv = t_attention.qkv.weight.reshape(t_attention.num_heads, 3, d, width)
    t_qkv_bias = t_attention.qkv.bias.reshape(t_attention.num_heads, 3, d)
    qkv = torch.zeros(3, student_heads, d, width * copies)
    for j, head in enumerate(heads):
        for part in range(3):
            qkv[part, j] = torch.cat([t_qkv[head, part] / copies] * copies, dim=1)
    s_attention.to_qkv.weight.copy_(qkv.reshape(3 * student_heads * d, width * copies))

    projection = t_attention.proj.weight.reshape(width, t_attention.num_heads, d)
    s_attention.to_out.weight.copy_(repeat(projection[:, heads].reshape(width, -1)))
    # Attention rows sum to 1, so a value bias b_v adds W_proj b_v to the output; fold it in
    # for every teacher head (the dropped heads' constant part included).
    folded = t_attention.proj.bias + torch.einsum("whd,hd->w", projection, t_qkv_bias[:, 2])
    s_attention.to_out.bias.copy_(repeat(folded))
    s_attention.pos_embedding.copy_(
        _shared_position_table(
            t_attention.attention_biases,
            heads,
            round(t_attention.attention_biases.shape[1] ** 0.5),
            s_attention.window_size,
        )
    )

    s_conv, t_conv = student_block.local_conv, teacher_block.local_conv
    s_conv.c.weight.copy_(repeat(t_conv.c.weight))
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(s_conv.bn, name).copy_(repeat(getattr(t_conv.bn, name)))

    s_mlp_norm = student_block.mlp_block.fn.norm
    s_mlp = student_block.mlp_block.fn.fn.net
    t_mlp = teacher_block.mlp
    s_mlp_norm.weight.copy_(repeat(t_mlp.norm.weight))
    s_mlp_norm.bias.copy_(repeat(t_mlp.norm.bias))
    s_mlp[0].weight.copy_(torch.block_diag(*[t_mlp.fc1.weight] * copies))
    s_mlp[0].bias.copy_(repeat(t_mlp.fc1.bias))
    s_mlp[2].weight.copy_(torch.block_diag(*[t_mlp.fc2.weight] * copies))
    s_mlp[2].bias.copy_(repeat(t_mlp.fc2.bias))


@torch.no_grad()
def _make_identity_block(block: nn.Module) -> None:
    """A Swin block that returns its input: zero residual branches, identity local conv."""
    attention = block.attention_block.fn.fn
    attention.to_out.weight.zero_()
    attention.to_out.bias.zero_()
    conv = block.local_conv
    conv.c.weight.zero_()
    conv.c.weight[:, 0, 1, 1] = 1.0
    conv.bn.weight.fill_(1.0)
    conv.bn.bias.zero_()
    conv.bn.running_mean.zero_()
    conv.bn.running_var.fill_(1.0 - conv.bn.eps)
    mlp = block.mlp_block.fn.fn.net
    mlp[2].weight.zero_()
    mlp[2].bias.zero_()


def _block_keys(prefix: str, module: nn.Module) -> list[str]:
    return [f"{prefix}.{name}" for name in module.state_dict()]


@torch.no_grad()
def transplant_encoder_blocks(
    student_encoder: nn.Module,
    teacher_encoder: nn.Module,
    report: TransplantReport,
    prefix: str = "image_encoder",
) -> None:
    """Stages 1, 3, 4 from the teacher; stage 2 as identities; stage 3 merge duplicates."""
    pairs = (("stage1", 1, False), ("stage3", 2, True), ("stage4", 3, False))
    for stage_name, layer_index, duplicate in pairs:
        student_blocks = _swin_blocks(getattr(student_encoder, stage_name))
        teacher_blocks = list(teacher_encoder.layers[layer_index].blocks)
        if len(student_blocks) != len(teacher_blocks):
            raise ValueError(
                f"{stage_name} has {len(student_blocks)} blocks but teacher layer {layer_index} "
                f"has {len(teacher_blocks)}; this transplant is for the published sizes"
            )
        for index, (s_block, t_block) in enumerate(zip(student_blocks, teacher_blocks)):
            _transplant_block(s_block, t_block, duplicate)
            pair, half = divmod(index, 2)
            report.transplanted += _block_keys(
                f"{prefix}.{stage_name}.blocks.{pair}.{half}", s_block
            )
    kept = _ranked_heads(
        teacher_encoder.layers[1].blocks[0].attn,
        student_encoder.stage1.blocks[0][0].attention_block.fn.fn.heads,
    )
    report.notes.append(f"stage 1 block 0 keeps teacher heads {kept} of 4")
    for index, block in enumerate(_swin_blocks(student_encoder.stage2)):
        _make_identity_block(block)
        pair, half = divmod(index, 2)
        report.identity += _block_keys(f"{prefix}.stage2.blocks.{pair}.{half}", block)
    merge = student_encoder.stage3.downsample.linear
    width = merge.in_features
    merge.weight.copy_(torch.cat([torch.eye(width), torch.eye(width)], dim=0))
    merge.bias.zero_()
    report.transplanted += [
        f"{prefix}.stage3.downsample.linear.weight",
        f"{prefix}.stage3.downsample.linear.bias",
    ]


def _ridge(
    inputs: torch.Tensor, targets: torch.Tensor, strength: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight (out, in) and bias (out,) minimising ||X W^T + b - Y||^2 + strength * ||W||^2.

    ``strength`` is relative to the mean diagonal of the centred Gram matrix."""
    x = inputs.double()
    y = targets.double()
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc
    ridge = strength * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
    weight = torch.linalg.solve(gram + ridge, xc.T @ yc).T
    bias = mean_y - weight @ mean_x
    return weight.float(), bias.float()


def _pixels(features: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C, H, W) -> (N, C) rows of N randomly chosen pixels (all if fewer)."""
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    if rows.shape[0] <= count:
        return rows
    return rows[torch.randperm(rows.shape[0], generator=generator)[:count]]


@torch.no_grad()
def fit_mergings(
    student_encoder: nn.Module,
    teacher_encoder: nn.Module,
    images: torch.Tensor,
    report: TransplantReport,
    prefix: str = "image_encoder",
    pixels_per_fit: int = 60000,
    strength: float = 1e-4,
    seed: int = 0,
) -> dict[str, float]:
    """Fit the stage 1, 2 and 4 patch mergings to the teacher on (B, 3, 256, 256) ``images``.

    Returns the relative residual ``||fit - target|| / ||target - mean||`` of each fit.
    """
    generator = torch.Generator().manual_seed(seed)
    taps = teacher_taps(teacher_encoder.eval(), images)
    fits = {
        "stage1": (F.pixel_unshuffle(taps["stem"], 2), taps["merged0"], 1),
        "stage2": (F.pixel_unshuffle(taps["blocks1"], 2), taps["merged1"], 1),
        "stage4": (taps["blocks2"], taps["merged2"], 2),
    }
    residuals = {}
    for stage_name, (inputs, targets, copies) in fits.items():
        joined = torch.cat([inputs, targets], dim=1)
        rows = _pixels(joined, pixels_per_fit, generator)
        x, y = rows[:, : inputs.shape[1]], rows[:, inputs.shape[1] :]
        weight, bias = _ridge(x, y, strength)
        residual = (x @ weight.T + bias - y).norm() / (y - y.mean(0)).norm()
        residuals[stage_name] = float(residual)
        linear = getattr(student_encoder, stage_name).downsample.linear
        linear.weight.copy_(torch.cat([weight / copies] * copies, dim=1))
        linear.bias.copy_(bias)
        report.least_squares += [
            f"{prefix}.{stage_name}.downsample.linear.weight",
            f"{prefix}.{stage_name}.downsample.linear.bias",
        ]
    report.notes.append(
        "patch-merging fits, relative residual: "
        + ", ".join(f"{name} {value:.3f}" for name, value in residuals.items())
    )
    return residuals


SKIP_PATH_CHOICES = ("scratch", "emulate")


def initialise_from_teacher(
    student: nn.Module,
    teacher: nn.Module,
    calibration_images: torch.Tensor | None = None,
    skip_path: str = "scratch",
) -> TransplantReport:
    """Initialise a Swin-LiteMedSAM ``student`` from a LiteMedSAM ``teacher`` (both segmenters).

    ``calibration_images``: (B, 3, 256, 256) frames for the least-squares mergings (a few real
    images; without them the mergings keep their random initialisation). ``skip_path``:
    ``"scratch"`` (random, the published recipe) or ``"emulate"`` (see
    :mod:`.decoder_transplant`).
    """
    if skip_path not in SKIP_PATH_CHOICES:
        raise ValueError(f"skip_path must be one of {SKIP_PATH_CHOICES}, got {skip_path!r}")
    report = TransplantReport()
    report.copied = copy_matching_tensors(student, teacher)
    transplant_encoder_blocks(student.image_encoder, teacher.image_encoder, report)
    if calibration_images is not None:
        fit_mergings(student.image_encoder, teacher.image_encoder, calibration_images, report)
    if skip_path == "emulate":
        from napari_swinlitemedsam.training.decoder_transplant import emulate_teacher_upscaling

        report.transplanted += emulate_teacher_upscaling(student.mask_decoder, teacher.mask_decoder)
        report.notes.append(
            "decoder upscaling path set to emulate the teacher's (skip inputs at zero weight)"
        )
    return report
