"""The swinlitemedsam command line on good and bad input (real bundled weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_swinlitemedsam.cli.main import main


def _disc_case(path, boxes=((16, 16, 47, 47),)):
    yy, xx = np.mgrid[:64, :64]
    image = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 144, 200, 10).astype(np.uint8)
    np.savez(path, imgs=np.dstack([image] * 3), boxes=np.array(boxes))


@pytest.mark.slow
def test_a_folder_with_good_and_bad_cases(tmp_path, capsys):
    inputs = tmp_path / "cases"
    inputs.mkdir()
    _disc_case(inputs / "2D_good.npz")
    (inputs / "2D_truncated.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(
        inputs / "2D_misnamed.npz", image=np.zeros((4, 4, 3), np.uint8), boxes=np.zeros((0, 4))
    )
    code = main(["segment", str(inputs), "-o", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "out" / "2D_good.npz").exists()
    assert not (tmp_path / "out" / "2D_truncated.npz").exists()
    assert "2 of 3 cases failed" in captured.err
    assert "2D_truncated.npz" in captured.err and "2D_misnamed.npz" in captured.err
    with np.load(tmp_path / "out" / "2D_good.npz") as result:
        assert result["segs"][32, 32] == 1


def test_missing_swin_checkpoint_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWINLITEMEDSAM_MODEL_DIR", str(tmp_path / "models"))
    _disc_case(tmp_path / "2D_case.npz")
    code = main(
        [
            "segment",
            str(tmp_path / "2D_case.npz"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            "swin-litemedsam",
        ]
    )
    assert code == 2
    assert "Swin_LiteMedSAM.pth" in capsys.readouterr().err


def test_no_cases_found(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(
        ["segment", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert code == 2
    assert "no .npz cases" in capsys.readouterr().err


@pytest.mark.slow
def test_an_unexpected_failure_in_one_case_is_one_line_and_the_others_finish(
    tmp_path, capsys, monkeypatch
):
    from napari_swinlitemedsam.inference import pipeline

    inputs = tmp_path / "cases"
    inputs.mkdir()
    _disc_case(inputs / "2D_a.npz")
    _disc_case(inputs / "2D_b.npz")
    real = pipeline.segment_case

    def failing_on_b(predictor, case, **options):
        if case.name.startswith("2D_b"):
            raise RuntimeError("DefaultCPUAllocator: not enough memory\nmore torch detail")
        return (yield from real(predictor, case, **options))

    monkeypatch.setattr(pipeline, "segment_case", failing_on_b)
    out = tmp_path / "out"
    code = main(["segment", str(inputs), "-o", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1
    assert (out / "2D_a.npz").exists() and not (out / "2D_b.npz").exists()
    assert "1 of 2 cases failed" in captured.err
    assert "RuntimeError: DefaultCPUAllocator: not enough memory (run with --debug" in captured.err
    assert "Traceback" not in captured.err + captured.out

    code = main(["segment", str(inputs), "-o", str(out), "--device", "cpu", "--debug"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" in captured.err and "more torch detail" in captured.err


def test_a_crash_outside_the_case_loop_is_one_line_unless_debugging(tmp_path, capsys, monkeypatch):
    import pytest

    from napari_swinlitemedsam.cli import main as cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "run_demo", broken)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: KeyError: 'boom' (run with --debug for the traceback)"
    with pytest.raises(KeyError):
        main(["--debug", "demo"])


def _stand_in_model(monkeypatch):
    """Load the instant stand-in network instead of real weights: an emulated-bfloat16 encode of
    the real encoder costs ~20 fp32 encodes, and what is checked here is the command line's
    handling of the options (bf16 accuracy on real weights: the benchmark smoke tests)."""
    from napari_swinlitemedsam.inference import predictor as predictor_module
    from napari_swinlitemedsam.model.checkpoint import LoadedModel
    from napari_swinlitemedsam.model.registry import get_spec
    from stub_segmenter import CountingSegmenter

    def load_stand_in(name_or_path, device="cpu"):
        model = CountingSegmenter()
        return LoadedModel(model, get_spec("litemedsam"), Path("stand-in.pth"), model.device)

    monkeypatch.setattr(predictor_module, "load_model", load_stand_in)


def test_precision_and_runtime_options(tmp_path, capsys, monkeypatch):
    from napari_swinlitemedsam.inference import cpu_features

    _stand_in_model(monkeypatch)
    monkeypatch.setattr(
        cpu_features,
        "describe_cpu",
        lambda: cpu_features.parse_cpuinfo("model name : a CPU\nflags : avx2\n"),
    )
    _disc_case(tmp_path / "2D_case.npz")
    out = tmp_path / "out"
    segment = ["segment", str(tmp_path / "2D_case.npz"), "-o", str(out), "--device", "cpu"]
    assert main([*segment, "--precision", "bf16"]) == 0
    lines = capsys.readouterr().err.splitlines()
    (warning,) = [line for line in lines if line.startswith("warning: ")]
    assert "emulated" in warning  # one line, no source excerpt
    assert any(line.startswith("encoder: ") and "bf16" in line for line in lines)
    with np.load(out / "2D_case.npz") as result:
        assert result["segs"].shape == (64, 64) and result["segs"].any()
    code = main([*segment, "--precision", "bf16", "--runtime", "onnxruntime"])
    assert code == 2
    assert "float32 only" in capsys.readouterr().err


def test_onnx_runtime_without_its_packages_is_a_usage_error(tmp_path, capsys, monkeypatch):
    from napari_swinlitemedsam.inference import onnx_encoder

    monkeypatch.setattr(onnx_encoder, "onnx_available", lambda: False)
    _disc_case(tmp_path / "2D_case.npz")
    code = main(
        [
            "segment",
            str(tmp_path / "2D_case.npz"),
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--runtime",
            "onnxruntime",
        ]
    )
    assert code == 2
    assert "pip install onnxruntime onnx" in capsys.readouterr().err


def test_annotate_series_writes_labels_in_the_input_format_by_default(tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from napari_swinlitemedsam.cli.main import build_parser, prepare_annotate

    scans = tmp_path / "scans"
    scans.mkdir()
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 5, 3), np.int16), np.eye(4)), scans / "a.nii")
    args = build_parser().parse_args(["annotate", str(scans), "-o", str(tmp_path / "out")])
    series, _ = prepare_annotate(args)
    assert series.label_format == "auto"
    assert series.label_path(0).name == "a.nii.gz"
