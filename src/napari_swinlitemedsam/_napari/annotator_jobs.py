"""The slice jobs of the :class:`~napari_swinlitemedsam._napari.annotator.Annotator`: encoding,
prefetching, decoding boxes and propagating an object, and writing their results into the layers.

A mixin: it uses the annotator's ``runner``, ``predictor``, ``image``, ``labels``, ``state``,
``progress``, ``_token``, ``_image_u8``, ``_encoded``, ``_undo_group`` and status callback, and is
only ever used as a base of ``Annotator`` (it has no state of its own).
"""

from __future__ import annotations

import numpy as np

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam._napari.workers import (
    DecodeRequest,
    decode_slice,
    encode_slice,
    propagate_object,
)
from napari_swinlitemedsam.annotation.annotator_state import SliceKey
from napari_swinlitemedsam.annotation.series import neighbours_to_prefetch


class SliceJobs:
    """Starts one job on the annotator's runner; results land in the layers on the GUI thread."""

    def _start_prefetch(self, current: SliceKey) -> None:
        """One low-priority job: a neighbouring slice of the stack, else ``background`` work."""
        if self.is_stack:
            depth = self.image.data.shape[0]
            near = neighbours_to_prefetch(
                0, 1, current, depth, self.prefetch_radius, self._slice_direction
            )
            missing = [
                target.z for target in near if target.item == 0 and target.z not in self._encoded
            ]
            if missing:
                return self._start_encode(missing[0], kind="prefetch")
        job = self.background() if self.background is not None else None
        if job is not None:
            self.runner.start("prefetch", job[0], job[1], on_return=job[2])

    def _slice_text(self, z: SliceKey) -> str:
        return "the image" if z is None else f"slice {z + 1}/{self.image.data.shape[0]}"

    def _start_encode(self, z: SliceKey, kind: str = "encode") -> None:
        """Encode slice ``z`` into the predictor's cache (``kind="prefetch"``: quietly)."""
        token = self._token

        def encoded(result) -> None:
            if token == self._token:
                self._encoded.add(result[0])

        args = (self.predictor, self._image_u8, z, (self._token, z))
        if kind != "encode":
            return self.runner.start(kind, encode_slice, args, on_return=encoded)
        self.on_status(f"Encoding {self._slice_text(z)}...")
        self.runner.start(kind, encode_slice, args, on_return=encoded, on_done=self.progress.end)
        self.progress.show(f"Encoding {self._slice_text(z)}")

    def _start_decode(self, request: DecodeRequest) -> None:
        count = len(request.ids)
        where = self._slice_text(request.slice_index)
        self.on_status(f"Decoding {count} box{'es' * (count != 1)} on {where}...")
        token = self._token
        args = (self.predictor, self._image_u8, (token, request.slice_index), request)
        self.runner.start(
            "decode", decode_slice, args, on_return=lambda result: self._decoded(result, token)
        )

    def _decoded(self, result, token: str) -> None:
        if token != self._token or self.labels is None:
            return
        request = result.request
        self._encoded.add(request.slice_index)
        with self.labels.block_history():
            for object_id, box, mask in zip(request.ids, request.boxes, result.masks):
                current = self.state.objects.get(object_id)
                box_now = None if current is None else current.boxes.get(request.slice_index)
                if box_now is None or not np.array_equal(box_now, box):
                    continue  # deleted or moved meanwhile; a newer request is queued
                layer_io.write_object_mask(
                    self.labels, object_id, mask, request.slice_index, self.overwrite
                )
        self.last_decode_seconds = result.seconds
        count = len(request.ids)
        self.on_status(
            f"Decoded {count} box{'es' * (count != 1)} on "
            f"{self._slice_text(request.slice_index)} in {result.seconds:.2f} s"
        )

    def _start_propagation(self, object_id: int) -> None:
        obj = self.state.objects.get(object_id)
        if obj is None or not obj.key_boxes():
            return self.schedule()
        token, depth = self._token, self.image.data.shape[0]
        self._undo_group.open(self.labels)

        def arrived(result) -> None:
            if token != self._token or self.labels is None:
                return
            layer_io.write_object_mask(
                self.labels, object_id, result.mask, result.z, self.overwrite
            )
            self._undo_group.written = True
            self._encoded.add(result.z)
            self.on_status(
                f"Propagating object {object_id}: slice {result.z + 1}/{depth} "
                f"({result.done}/{result.total})"
            )
            self.progress.advance(result.done, result.total)  # last: the bar may process events

        def ended() -> None:
            if self._undo_group.is_open:  # not failed (a failure took the slices back)
                self._undo_group.close()
                self.on_status(f"Object {object_id} propagated")
            self.progress.end()

        args = (self.predictor, self._image_u8, obj.key_boxes(), token)
        self.on_status(f"Propagating object {object_id}...")
        self.runner.start("propagate", propagate_object, args, on_yield=arrived, on_done=ended)
        self.progress.show(f"Propagating object {object_id}", total=depth)
