"""Section 2: box -> mask with the slice already encoded, batched and one at a time.

The slice is the middle slice of the real nuclei3d stack; the boxes are the tight boxes of the
nuclei on it (inclusive, original pixels). For 1, 4 and 16 boxes per decoder call, the time per
box covers everything ``BoxPredictor.predict_256`` does: the box-derived points and scribble
(Swin-LiteMedSAM), the decoder, the resize of the logits to the original size and the
threshold. The reference-style figure decodes one box per call and recomputes the skip neck for
it (Swin-LiteMedSAM), everything else equal. The masks of both are compared object by object
(differing pixels, lowest DSC; see ``mask_agreement``): batched and one-box calls round
differently on some CPUs, so a pixel on the threshold may flip. For a box-only decoder
(LiteMedSAM) one box per call is also timed on each installed graph runtime (ONNX Runtime,
OpenVINO; :mod:`napari_swinlitemedsam.inference.graph_decoder`) from the same features, its
masks compared with torch's.
"""

from __future__ import annotations

import numpy as np

from bench_setup import make_predictor
from mask_agreement import describe, mask_agreement
from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.graph_steps import has_graph_decoder
from napari_swinlitemedsam.inference.onnx_encoder import onnx_available
from napari_swinlitemedsam.inference.openvino_encoder import openvino_available
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from reference_style import decode_one_box, encode_plain, logits_to_mask, prepare_slice
from report import Row
from timing import measure_interleaved

SECTION = "2 decode (slice cached)"
BATCHES = (1, 4, 16)


def slice_with_boxes(count: int = 16) -> tuple[np.ndarray, np.ndarray, int]:
    """The middle nuclei3d slice (H, W) uint8, (count, 4) inclusive boxes of its nuclei, z."""
    sample = load_sample("nuclei3d")
    z = sample.image.shape[0] // 2
    labels = sample.labels[z]
    boxes = []
    for label in np.unique(labels):
        if label == 0:
            continue
        ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    boxes = np.asarray(boxes, dtype=np.float64)
    reps = int(np.ceil(count / len(boxes)))
    return sample.image[z], np.tile(boxes, (reps, 1))[:count], z


def graph_runtimes_installed() -> list[str]:
    """The graph runtimes the box-only decoder can run on here."""
    return [
        runtime
        for runtime, installed in (
            ("onnxruntime", onnx_available()),
            ("openvino", openvino_available()),
        )
        if installed
    ]


class ReferenceDecoder:
    """Reference-style decoding of boxes on one slice: one box per call, skip neck recomputed."""

    def __init__(self, model: PromptableSegmenter, image: np.ndarray, slice_index: int) -> None:
        self.model = model
        tensor, self.image_256, self.new_size = prepare_slice(image)
        self.original_size = tuple(image.shape[:2])
        self.embedding, self.skips = encode_plain(model, tensor)
        self.slice_index = slice_index

    def masks(self, boxes_256: np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks of (N, 4) boxes in the 256 frame, decoded one by one."""
        return np.stack(
            [
                logits_to_mask(
                    decode_one_box(
                        self.model,
                        self.embedding,
                        self.skips,
                        box,
                        self.image_256,
                        self.slice_index,
                        self.model.mask_input_always,
                    ),
                    self.new_size,
                    self.original_size,
                )
                for box in boxes_256
            ]
        )


def decoder_section(
    models: dict[str, PromptableSegmenter], repeats: int, warmup: int = 1
) -> tuple[list[Row], dict]:
    image, boxes, z = slice_with_boxes(max(BATCHES))
    rows, figures = [], {}
    for name, model in models.items():
        model_rows, figures[name] = _decode_model(name, model, image, boxes, z, repeats, warmup)
        rows += model_rows
    return rows, figures


def _decode_model(name, model, image, boxes, z, repeats, warmup) -> tuple[list[Row], dict]:
    predictor = make_predictor(model, name)
    encoded = predictor.encode(image)
    boxes_256 = transforms.boxes_to_256(boxes, encoded.original_size)
    reference = ReferenceDecoder(model, image, z)
    fns = {
        f"ours x{n}": (lambda n=n: predictor.predict_256(boxes_256[:n], encoded, slice_index=z))
        for n in BATCHES
    }
    fns["reference x1"] = lambda: reference.masks(boxes_256[:1])
    graph_runs = {}
    if has_graph_decoder(model):  # the decoder on the graph runtimes, same features
        for runtime in graph_runtimes_installed():
            graph_runs[runtime] = make_predictor(model, name, runtime=runtime)
            graph_runs[runtime].predict_256(boxes_256[:1], encoded)  # untimed: export, compile
            fns[f"ours {runtime} x1"] = lambda run=graph_runs[runtime]: run.predict_256(
                boxes_256[:1], encoded, slice_index=z
            )
    timings = measure_interleaved(fns, repeats, warmup)
    ours = predictor.predict_256(boxes_256, encoded, slice_index=z).masks
    agreement = mask_agreement(ours, reference.masks(boxes_256))
    per_box = {key: timings[key].scaled(1 / int(key.rsplit("x", 1)[1])) for key in timings}
    ref = per_box["reference x1"].median
    figures = {key: t.median for key, t in per_box.items()}
    figures["agreement"] = agreement
    neck = "skip neck recomputed per box" if model.uses_skips else "no skip neck"
    rows = [
        Row(
            SECTION,
            f"{name}: reference-style, per box",
            str(per_box["reference x1"]),
            f"one box per call, {neck}",
            {"seconds": ref},
        )
    ]
    for n in BATCHES:
        t = per_box[f"ours x{n}"]
        label = "one at a time" if n == 1 else f"{n} boxes per call"
        rows.append(
            Row(
                SECTION,
                f"{name}: ours, {label}, per box",
                str(t),
                f"**{t.median / ref:.2f}× reference-style**",
                {"seconds": t.median, "vs_reference": t.median / ref},
            )
        )
    torch_one = per_box["ours x1"].median
    for runtime, run in graph_runs.items():
        t = per_box[f"ours {runtime} x1"]
        agreement_graph = mask_agreement(
            run.predict_256(boxes_256, encoded, slice_index=z).masks, ours
        )
        figures[f"{runtime} agreement"] = agreement_graph
        rows.append(
            Row(
                SECTION,
                f"{name}: ours, one at a time, decoder on {runtime}",
                str(t),
                f"**{torch_one / t.median:.2f}× torch**; masks vs torch: {describe(agreement_graph)}",
                {"seconds": t.median, "vs_torch": torch_one / t.median, **agreement_graph},
            )
        )
    rows.append(
        Row(
            SECTION,
            f"{name}: masks ours vs reference-style",
            describe(agreement),
            f"{len(boxes_256)} boxes on slice {z}",
            agreement,
        )
    )
    return rows, figures
