"""The prompt encoder's dense positional encoding is computed once and follows its weights."""

from __future__ import annotations

import torch

from napari_swinlitemedsam.model.prompt_encoder import PromptEncoder


def _fresh(encoder: PromptEncoder) -> torch.Tensor:
    return encoder.pe_layer.grid(*encoder.image_embedding_size).unsqueeze(0)


def test_dense_pe_is_reused_until_the_frequencies_change():
    encoder = PromptEncoder().eval()
    first = encoder.get_dense_pe()
    assert first.shape == (1, 256, 64, 64)
    assert encoder.get_dense_pe() is first  # reused
    torch.testing.assert_close(first, _fresh(encoder), rtol=0, atol=0)  # same code, same data

    state = encoder.state_dict()
    state["pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    encoder.load_state_dict(state)  # an in-place copy: new weights, same tensor
    after = encoder.get_dense_pe()
    assert after is not first and not torch.equal(after, first)
    torch.testing.assert_close(after, _fresh(encoder), rtol=0, atol=0)


def test_dense_pe_made_under_inference_mode_is_not_reused_for_training():
    encoder = PromptEncoder()
    with torch.inference_mode():
        inference = encoder.get_dense_pe()
    training = encoder.get_dense_pe()
    assert not training.is_inference() and inference.is_inference()
    # usable in an autograd graph
    weight = torch.ones((), requires_grad=True)
    (training * weight).sum().backward()
    assert weight.grad is not None
