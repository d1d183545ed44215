"""Conv2dBN folds its BatchNorm into the convolution for inference, and only there."""

from __future__ import annotations

import pytest
import torch

from napari_swinlitemedsam.model.common import Conv2dBN


def trained_like(groups: int = 1) -> Conv2dBN:
    """A Conv2dBN with non-trivial running statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    block = Conv2dBN(8, 8, kernel_size=3, padding=1, groups=groups)
    with torch.no_grad():
        block.bn.weight.uniform_(0.5, 2.0)
        block.bn.bias.uniform_(-1.0, 1.0)
        block.bn.running_mean.uniform_(-1.0, 1.0)
        block.bn.running_var.uniform_(0.1, 3.0)
    return block.eval()


def two_layers(block: Conv2dBN, x: torch.Tensor) -> torch.Tensor:
    return block.bn(block.c(x))


@pytest.mark.parametrize("groups", [1, 8])
def test_folded_inference_equals_conv_then_batchnorm(groups):
    block = trained_like(groups)
    x = torch.randn(2, 8, 10, 12)
    with torch.no_grad():
        expected = two_layers(block, x)
    norm_calls = []
    block.bn.register_forward_hook(lambda *_: norm_calls.append(1))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert norm_calls == []  # one convolution, no BatchNorm pass


def test_folded_weights_follow_new_weights_and_statistics():
    block = trained_like()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        block(x)  # builds the folded pair
        other = trained_like()
        with torch.no_grad():
            other.bn.running_mean.add_(0.5)
            other.c.weight.mul_(-1.0)
        block.load_state_dict(other.state_dict())
        torch.testing.assert_close(block(x), two_layers(other, x), rtol=1e-5, atol=1e-5)
        block.bn.running_var.mul_(4.0)  # an in-place change of one statistic
        torch.testing.assert_close(block(x), two_layers(block, x), rtol=1e-5, atol=1e-5)


def test_training_and_autograd_use_the_two_layers():
    block = trained_like()
    x = torch.randn(4, 8, 6, 6)
    block.train()
    before = block.bn.running_mean.clone()
    block(x).sum().backward()
    assert not torch.equal(block.bn.running_mean, before)  # statistics still updated
    assert block.bn.weight.grad is not None and block.c.weight.grad is not None
    block.eval()
    block.zero_grad()
    block(x).square().sum().backward()  # eval mode with autograd: gradients reach both layers
    assert block.bn.weight.grad is not None and block.bn.weight.grad.abs().sum() > 0
