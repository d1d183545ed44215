"""Parameter counts and FLOPs of both networks, measured with torch's FLOP counter.

Usage: python benchmarks/model_stats.py

FLOPs count a multiply-add as 2 operations (torch.utils.flop_counter convention), the same
convention as the published figures for Swin-LiteMedSAM (97.5 GFLOPs per slice for the encoder,
12.35 GFLOPs per box for the decoder). ``PromptableSegmenter.encode`` also runs the decoder's
prompt-independent skip neck once per slice; it is reported separately.
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from napari_swinlitemedsam.model.registry import build_litemedsam, build_swin_litemedsam


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn``.

    Attention runs on the math backend while counting: the counter sees its matrix products
    there, whereas the fused CPU kernel that inference uses is invisible to it.
    """
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


def stats(name: str, build) -> None:
    model = build().eval()
    image = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        encoder_flops = count_flops(lambda: model.encode(image))
        features = model.encode(image)[0]
        box = torch.tensor([[60.0, 60.0, 120.0, 140.0]])
        points = torch.tensor([[[70.0, 70.0], [70.0, 130.0], [110.0, 130.0], [110.0, 70.0]]])
        labels = torch.ones(1, 4, dtype=torch.long)
        uses_points = model.mask_input_always
        decode_flops = count_flops(
            lambda: model.decode(
                features, box, points if uses_points else None, labels if uses_points else None
            )
        )
        skip_flops = 0
        if model.uses_skips:
            _, skips = model.image_encoder(image)
            skip_flops = count_flops(lambda: model.mask_decoder.skip_context(skips))
    parts = {
        "image_encoder": model.image_encoder,
        "prompt_encoder": model.prompt_encoder,
        "mask_decoder": model.mask_decoder,
    }
    print(f"{name}")
    for part, module in parts.items():
        print(f"  {part:15s} {sum(p.numel() for p in module.parameters()) / 1e6:8.3f} M parameters")
    print(f"  encoder per slice     {(encoder_flops - skip_flops) / 1e9:7.2f} GFLOPs")
    if skip_flops:
        print(
            f"  skip neck per slice   {skip_flops / 1e9:7.2f} GFLOPs (prompt-independent, cached)"
        )
    print(
        f"  decoder per box       {decode_flops / 1e9:7.2f} GFLOPs"
        + (" (with the skip neck cached)" if skip_flops else "")
    )
    if skip_flops:
        total = decode_flops + skip_flops
        print(f"  decoder per box, neck recomputed (reference) {total / 1e9:.2f} GFLOPs")


if __name__ == "__main__":
    torch.manual_seed(0)
    stats("swin-litemedsam", build_swin_litemedsam)
    stats("litemedsam", build_litemedsam)
