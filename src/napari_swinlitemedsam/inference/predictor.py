"""The predictor: encode an image once, decode many boxes cheaply.

``BoxPredictor.set_image`` runs the image encoder (and, for Swin-LiteMedSAM, the decoder's
prompt-independent skip neck) once per 2D image or slice and keeps the result in a bounded
cache; ``BoxPredictor.predict`` decodes every box of that image in one batched call.

Coordinates: boxes are ``(N, 4)`` ``[x_min, y_min, x_max, y_max]`` in original pixels, inclusive
(``x_max`` is the last column of the object), as in the challenge files. Masks come back as
``(N, H, W)``.
"""

from __future__ import annotations

import typing
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.box_prompts import decoder_prompts
from napari_swinlitemedsam.inference.deferred_self_check import DeferredSelfCheck
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache, encoder_identity
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache, EncodedSlice
from napari_swinlitemedsam.inference.graph_steps import GraphSteps
from napari_swinlitemedsam.inference.inputs import (
    PredictorError,
    check_boxes,
    clicks_to_256,
    model_input_uint8,
)
from napari_swinlitemedsam.inference.onnx_encoder import check_runtime
from napari_swinlitemedsam.inference.precision import (
    check_feature_dtype,
    check_precision,
    encoder_context,
    encoder_input,
    stored_features,
)
from napari_swinlitemedsam.inference.prediction import Prediction
from napari_swinlitemedsam.inference.prompt_random import RandomSource
from napari_swinlitemedsam.inference.runtime_choice import RuntimeChoice, choose_runtime
from napari_swinlitemedsam.inference.runtime_setup import build_measured, warn_if_bf16_is_emulated
from napari_swinlitemedsam.model.checkpoint import load_model
from napari_swinlitemedsam.model.registry import PROMPTS_BOX, PROMPTS_BOX_POINTS_SCRIBBLE
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter

__all__ = ["BoxPredictor", "Prediction", "PredictorError"]


class BoxPredictor:
    """Box-prompted segmentation of 2D images with a cached encoder output.

    Args:
        model: a :class:`PromptableSegmenter` in eval mode.
        prompts: ``PROMPTS_BOX`` (LiteMedSAM) or ``PROMPTS_BOX_POINTS_SCRIBBLE``
            (Swin-LiteMedSAM: 4 points and a scribble are derived from each box).
        cache: where encoded slices are kept (a bounded LRU by default).
        model_name: identifies the weights in cache keys.
        max_batch: boxes decoded per call; more boxes are decoded in several calls (4: per
            box, 4 per call was faster than 16 on both CPUs measured, docs/performance.md).
        disk_cache: optional second cache level on disk, keyed by the pixels' content and
            consulted after ``cache``; features then come in its storage dtype whether just
            encoded or read back, so warm and cold runs give the same masks.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` (bfloat16 autocast, fast only with
            native bfloat16, else an :class:`EmulatedBf16Warning`) or ``"fp16"`` (CUDA only).
        feature_dtype: dtype of the encoded slices kept in the cache (None: float32;
            ``torch.float16`` halves their memory).
        runtime: ``"auto"``, ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (an extra): the
            encoder step exported once per weights (:mod:`.onnx_encoder`), float32 only.
        decoder_runtime: where boxes are decoded (a LiteMedSAM box without clicks, every
            Swin-LiteMedSAM box; LiteMedSAM boxes with clicks decode in torch): ``"auto"``
            (the self-check's choice, else the encoder's graph runtime, else torch),
            ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.

    "auto" here measures nothing (several candidates: torch fp32); :meth:`from_pretrained`
    measures (:mod:`.runtime_choice`); ``runtime_choice`` tells what runs and why.
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        prompts: str = PROMPTS_BOX,
        cache: EmbeddingCache | None = None,
        model_name: str = "",
        max_batch: int = 4,
        disk_cache: DiskEmbeddingCache | None = None,
        precision: str = "auto",
        feature_dtype: torch.dtype | None = None,
        runtime: str = "auto",
        decoder_runtime: str = "auto",
    ) -> None:
        if runtime not in ("auto", "torch") and precision not in ("auto", "fp32"):
            raise ValueError(f"runtime={runtime!r} runs float32 only; use precision='fp32'")
        if precision == "bf16" and model.device.type == "cpu":
            warn_if_bf16_is_emulated(model_name)
        self.feature_dtype = check_feature_dtype(feature_dtype)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        if prompts not in (PROMPTS_BOX, PROMPTS_BOX_POINTS_SCRIBBLE):
            raise ValueError(f"unknown prompt scheme {prompts!r}")
        self.model = model.eval()
        self.model_name = model_name
        self.run_as(choose_runtime(model, None, precision, runtime), decoder_runtime)
        self.prompts = prompts
        self.cache = cache if cache is not None else EmbeddingCache()
        self.disk_cache = disk_cache
        self._current: EncodedSlice | None = None
        self.pending_self_check: DeferredSelfCheck | None = None  # see from_pretrained

    def run_as(self, choice: RuntimeChoice, decoder_runtime: str = "auto") -> None:
        """Run the encoder and box decoder as ``choice`` says (``decoder_runtime`` "auto": its
        decoder) from now on, e.g. after a :mod:`.deferred_self_check`. Cached slices stay:
        float32 runtimes agree to ~1e-6 of the logit range, bfloat16 was checked on masks."""
        self.runtime_choice = choice
        self.precision = check_precision(choice.precision)
        self.runtime = check_runtime(choice.runtime)
        if decoder_runtime == "auto":
            decoder_runtime = choice.decoder
        self.graph = GraphSteps(self.model, self.model_name, self.runtime, decoder_runtime)
        self._encoder_identity: str | None = None  # the disk cache keys name the runtime

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = "litemedsam",
        device: str = "auto",
        cache_bytes: int = 1 << 30,
        precision: str = "auto",
        runtime: str = "auto",
        runtime_choice_dir: Path | None = None,
        self_check: str = "now",
        **options,
    ) -> BoxPredictor:
        """Load weights by name or path (offline) and wrap them in a predictor.

        ``precision``/``runtime`` "auto" run the self-check of :mod:`.runtime_choice` the first
        time this model is used on this machine (a few encodes of the bundled samples; the
        decision is kept in ``runtime_choice_dir``, default the user cache folder):
        ``self_check="now"`` before returning, ``"later"`` a step at a time through
        ``pending_self_check`` (:mod:`.deferred_self_check`) while it works on torch fp32.
        ``options`` (``max_batch``, ``feature_dtype``, ...) go to the constructor.
        """
        loaded = load_model(name_or_path, device=device)
        model, prompts, name = loaded.model, loaded.spec.prompts, loaded.spec.name
        cache = EmbeddingCache(cache_bytes)
        return build_measured(
            cls, model, prompts, name, cache, precision, runtime, runtime_choice_dir, self_check,
            **options,
        )  # fmt: skip

    def adopt_graph_sessions(
        self, encoder_from: BoxPredictor | None, decoder_from: BoxPredictor | None = None
    ) -> None:
        """Use the already opened graph-runtime encoder of ``encoder_from`` and box decoder of
        ``decoder_from`` (same model, each on the runtime this predictor runs it on)."""
        self.graph.adopt(
            encoder_from.graph if encoder_from is not None else None,
            decoder_from.graph if decoder_from is not None else None,
        )

    def graph_openings(self) -> list:
        """The graphs' one-time work left, one call per graph (a self-check step each)."""
        return self.graph.openings()

    @property
    def encoder_identity(self) -> str:
        """Model name, weights fingerprint, dtype, preprocessing version, and the precision
        and feature dtype when not float32 (disk cache keys)."""
        if self._encoder_identity is None:
            variant = []
            if self.precision != "fp32":
                variant.append(f"precision={self.precision}")
            if self.runtime != "torch":
                variant.append(f"runtime={self.runtime}")
            if self.feature_dtype not in (None, torch.float32):
                variant.append(f"features={self.feature_dtype}")
            self._encoder_identity = encoder_identity(
                self.model, self.model_name, ",".join(variant)
            )
        return self._encoder_identity

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def current(self) -> EncodedSlice:
        if self._current is None:
            raise PredictorError("no image is set: call set_image(image) before predict(boxes)")
        return self._current

    def encode(self, image: np.ndarray, key: Hashable | None = None) -> EncodedSlice:
        """Encode one (H, W) or (H, W, 3) image, using the cache when ``key`` was seen before.

        uint8 images go in unchanged (the challenge convention); other dtypes are mapped to
        uint8 with :func:`intensity.to_uint8` (automatic intensity policy) first. For a stack,
        convert the whole volume once instead, so that all slices share one mapping.
        """
        return self.encode_many([image], [key])[0]

    def encode_many(
        self, images: Sequence[np.ndarray], keys: Sequence[Hashable | None] | None = None
    ) -> list[EncodedSlice]:
        """Encode several images of the same kind as :meth:`encode`, in one encoder call.

        Images found in a cache are not encoded again; the others are encoded together (torch:
        one (B, 3, 256, 256) batch; a graph runtime: side by side, :mod:`.parallel_encodes`),
        which agrees with single encodes to float32 rounding, not bit for bit.
        """
        keys = list(keys) if keys is not None else [None] * len(images)
        if len(keys) != len(images):
            raise ValueError(f"{len(images)} images but {len(keys)} keys")
        results: list[EncodedSlice | None] = [None] * len(images)
        pending = []  # (position, rgb, image_256, new_size, disk key) still to encode
        for position, (image, key) in enumerate(zip(images, keys)):
            cache_key = None if key is None else (self.model_name, key)
            cached = None if cache_key is None else self.cache.get(cache_key)
            if cached is not None:
                results[position] = cached
                continue
            rgb = model_input_uint8(image)
            image_256, new_size = transforms.prepare_image(rgb)
            disk_key = features = None
            if self.disk_cache is not None:
                disk_key = self.disk_cache.key_for(rgb, self.encoder_identity)
                features = self.disk_cache.get(disk_key)
            if features is not None:
                results[position] = self._keep(cache_key, features, rgb, image_256, new_size)
            else:
                pending.append((position, cache_key, rgb, image_256, new_size, disk_key))
        if pending:
            batch = np.stack([np.ascontiguousarray(item[3]) for item in pending])
            tensor = torch.from_numpy(batch).to(self.device)
            with torch.inference_mode():
                encoded = self._run_encoder(tensor)
            for (position, cache_key, rgb, image_256, new_size, disk_key), features in zip(
                pending, encoded
            ):
                features = stored_features(features, self.feature_dtype)
                if len(pending) > 1:  # a batch slice would keep the whole batch alive
                    features = ImageFeatures.from_tensors(
                        {name: t.clone() for name, t in features.tensors().items()}
                    )
                if disk_key is not None and self.disk_cache is not None:
                    features = self.disk_cache.put(disk_key, features)
                results[position] = self._keep(cache_key, features, rgb, image_256, new_size)
        return typing.cast(list[EncodedSlice], results)

    def _keep(self, cache_key, features, rgb, image_256, new_size) -> EncodedSlice:
        """Wrap encoder output as an :class:`EncodedSlice` on this device and cache it."""
        if self.disk_cache is not None:
            features = features.to(self.device)
        original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        frame_size = (int(new_size[0]), int(new_size[1]))
        encoded = EncodedSlice(features, image_256, original_size, frame_size)
        if cache_key is not None:
            self.cache.put(cache_key, encoded)
        return encoded

    def _run_encoder(self, tensor: torch.Tensor) -> list[ImageFeatures]:
        """(B, 3, 256, 256) model input -> B ImageFeatures, with the chosen runtime and precision."""
        if self.graph.encodes:
            return self.graph.encode(tensor)
        with encoder_context(self.precision, tensor.device):
            return self.model.encode(encoder_input(tensor, self.precision))

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> EncodedSlice:
        """Encode ``image`` and make it the target of :meth:`predict`."""
        self._current = self.encode(image, key)
        return self._current

    def set_encoded(self, encoded: EncodedSlice) -> None:
        """Make an already encoded slice the target of :meth:`predict`."""
        self._current = encoded

    def predict(
        self,
        boxes: np.ndarray,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        slice_index: int = 0,
        prompt_source: RandomSource | None = None,
    ) -> Prediction:
        """Segment N boxes on the current image in one decoder call.

        Args:
            boxes: (N, 4) ``[x_min, y_min, x_max, y_max]`` inclusive, original pixels.
            points: optional (N, P, 2) extra ``[x, y]`` clicks per box, original pixels.
            point_labels: (N, P) 1 = positive, 0 = negative.
            slice_index: seeds the box-derived prompts (with the box) so the same box on the
                same slice always gives the same mask.
            prompt_source: draw the box-derived prompts of all boxes, in order, from this
                source instead (e.g. a ``ReferenceRandomSource`` to replay the reference).
        """
        current = self.current
        checked = check_boxes(boxes, current.original_size)
        boxes_256 = transforms.boxes_to_256(checked, current.original_size)
        extra = None
        if points is not None:
            extra = clicks_to_256(points, point_labels, len(checked), current.original_size)
        return self.predict_256(
            boxes_256,
            current,
            slice_index=slice_index,
            extra_points=extra,
            prompt_source=prompt_source,
        )

    def predict_256(
        self,
        boxes_256: np.ndarray,
        encoded: EncodedSlice | None = None,
        slice_index: int = 0,
        extra_points: tuple[np.ndarray, np.ndarray] | None = None,
        prompt_source: RandomSource | None = None,
    ) -> Prediction:
        """Like :meth:`predict` with (N, 4) boxes already in the 256 frame."""
        encoded = encoded if encoded is not None else self.current
        boxes_256 = np.asarray(boxes_256, dtype=np.float64).reshape(-1, 4)
        count = len(boxes_256)
        height, width = encoded.original_size
        if count == 0:
            return Prediction(
                np.zeros((0, height, width), bool),
                np.zeros(0, np.float32),
                np.zeros((0, 256, 256), np.float32),
                boxes_256,
            )
        points, labels, scribbles = decoder_prompts(
            self.prompts, boxes_256, encoded.image_256, slice_index, extra_points, prompt_source
        )
        device, dtype = self.device, self.model.dtype
        all_masks, all_scores, all_logits = [], [], []
        with torch.inference_mode():
            on_graph = self.graph.decodes(points, scribbles)
            decode = self.graph.decode if on_graph else self.model.decode
            # a graph decoder reads the stored features as float32 and keeps what it derives
            # from them for the image's next boxes: only torch gets a converted copy
            features = encoded.features
            if not on_graph and (
                features.embedding.device != device or features.embedding.dtype != dtype
            ):
                features = features.to(device, dtype)
            # Chunks keep the per-box (256, 64, 64) dense tensors of one call in cache-sized
            # batches; one huge batch is memory-bound and slower than several small ones.
            for start in range(0, count, self.max_batch):
                chunk = slice(start, start + self.max_batch)

                def as_tensor(array, cast=True, chunk=chunk):
                    if array is None:
                        return None
                    return torch.as_tensor(
                        array[chunk], dtype=dtype if cast else None, device=device
                    )

                logits, iou = decode(
                    features,
                    as_tensor(boxes_256),
                    as_tensor(points),
                    as_tensor(labels, cast=False),
                    as_tensor(scribbles),
                )
                logits = logits[:, 0].float()
                original = transforms.logits_to_original(
                    logits, encoded.new_size, encoded.original_size
                )
                all_masks.append((torch.sigmoid(torch.as_tensor(original)) > 0.5).cpu().numpy())
                all_scores.append(iou[:, 0].float().cpu().numpy())
                all_logits.append(logits.cpu().numpy())
        return Prediction(
            masks=np.concatenate(all_masks),
            scores=np.concatenate(all_scores),
            low_res_logits=np.concatenate(all_logits),
            boxes_256=boxes_256,
        )

    @property
    def slices_per_encode(self) -> int:
        """Slices worth one :meth:`encode_many` call (2 where a graph runtime encodes side by side)."""
        return self.graph.slices_per_encode

    @property
    def decoder_runtime(self) -> str:
        """Where a box without clicks is decoded."""
        return self.graph.decoder_runtime if self.graph.decodes(None, None) else "torch"

    def describe_runtimes(self) -> str:
        """What runs the encoder and why, and where a box without clicks is decoded, e.g.
        ``"openvino fp32 (measured, 2.8x torch fp32); boxes decoded on onnxruntime (1.4x
        torch)"``."""
        text = self.runtime_choice.describe()
        if self.decoder_runtime != "torch":
            text += f"; boxes decoded on {self.decoder_runtime}"
            gain = self.runtime_choice.box_gain(self.decoder_runtime)
            if gain is not None:
                text += f" ({gain:.2f}x torch)"
        return text
