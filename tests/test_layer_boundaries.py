"""Imports go one way: model (torch) <- inference (numpy, no GUI) <- napari glue.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GUI_MODULES = ("napari", "qtpy", "magicgui", "PyQt6", "PyQt5", "PySide2", "PySide6", "vispy", "superqt")


def imported_after(statement: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``statement`` in a new interpreter."""
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


INFERENCE_API = (
    "import napari_swinlitemedsam.inference.predictor, napari_swinlitemedsam.inference.volume, "
    "napari_swinlitemedsam.inference.pipeline, napari_swinlitemedsam.inference.challenge_io, "
    "napari_swinlitemedsam.inference.samples, napari_swinlitemedsam.inference.layer_coordinates, "
    "napari_swinlitemedsam.inference.metrics, napari_swinlitemedsam.cli"
)


def test_the_inference_api_does_not_import_any_gui_toolkit():
    loaded = imported_after(INFERENCE_API)
    assert "torch" in loaded  # it did import the model
    assert not loaded & set(GUI_MODULES), sorted(loaded & set(GUI_MODULES))


def test_importing_the_package_imports_neither_torch_nor_napari():
    loaded = imported_after("import napari_swinlitemedsam")
    assert not loaded & {"torch", "numpy", *GUI_MODULES}, sorted(loaded & {"torch", "numpy", *GUI_MODULES})


@pytest.mark.parametrize(
    "module", ["napari_swinlitemedsam._annotator_state", "napari_swinlitemedsam.inference.layer_coordinates"]
)
def test_pure_bookkeeping_modules_need_neither_torch_nor_gui(module):
    loaded = imported_after(f"import {module}")
    assert not loaded & {"torch", *GUI_MODULES}, sorted(loaded & {"torch", *GUI_MODULES})


def test_the_napari_reader_and_sample_data_do_not_import_torch():
    # Opening a file or a sample must not wait for torch: the model loads only in the widget.
    loaded = imported_after(
        "import napari_swinlitemedsam._reader, napari_swinlitemedsam._writer, "
        "napari_swinlitemedsam._sample_data"
    )
    assert "torch" not in loaded
