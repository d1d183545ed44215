"""Small building blocks shared by the encoders and decoders."""

from __future__ import annotations

import typing

import torch
from torch import nn
from torch.nn import functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor (SAM's convention, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        normed = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normed + self.bias[:, None, None]


class MLP(nn.Module):
    """A stack of ``num_layers`` Linear layers with ReLU between them (SAM's heads).

    Parameter names: ``layers.{i}.weight/bias``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths, outs))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm2d; parameter names ``c.*`` and ``bn.*``.

    In inference (eval mode, autograd off) it runs as one convolution with the BatchNorm folded
    into its weight and bias: ``w * g / sqrt(v + eps)`` and ``b - m * g / sqrt(v + eps)``, the
    same arithmetic up to float rounding, one pass over the output fewer (on the 2-core AVX2
    CPU the separate BatchNorm passes were ~9 % of LiteMedSAM's torch encode). The folded pair
    is kept and rebuilt when a parameter or running statistic changes (storage or in-place
    version: ``load_state_dict``, an optimiser step, ``.to()``). Training and autograd use the
    two layers as they are, so BatchNorm's statistics and gradients are unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False
            ),
        )
        self.add_module("bn", nn.BatchNorm2d(out_channels))
        self._folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self._folded_from: tuple = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        if self.training or torch.is_grad_enabled():
            return super().forward(x)
        conv = typing.cast(nn.Conv2d, self.c)
        weight, bias = self.folded()
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The convolution's (C_out, C_in / groups, k, k) weight and (C_out,) bias with the
        BatchNorm's running statistics and affine parameters folded in."""
        conv = typing.cast(nn.Conv2d, self.c)
        norm = typing.cast(nn.BatchNorm2d, self.bn)
        mean, variance = norm.running_mean, norm.running_var
        if mean is None or variance is None:  # not built by __init__: no running statistics
            raise ValueError("Conv2dBN needs a BatchNorm2d that tracks running statistics")
        sources = [conv.weight, norm.weight, norm.bias, mean, variance]
        stamp = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if self._folded is None or stamp != self._folded_from:
            scale = norm.weight / torch.sqrt(variance + norm.eps)
            weight = conv.weight * scale.reshape(-1, 1, 1, 1)
            self._folded = (weight, norm.bias - mean * scale)
            self._folded_from = stamp
        return self._folded
