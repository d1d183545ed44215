"""A real napari window opens, draws an image with OpenGL, and a screenshot shows it.

Runs on a virtual X display (pytest-xvfb starts Xvfb when it is installed), never skipped:
if this fails, the GUI stack (Qt, the X libraries, Mesa) is not usable on this machine.
"""

from __future__ import annotations

import numpy as np

from napari_swinlitemedsam.io.samples import load_sample


def test_viewer_window_renders_an_image(make_napari_viewer):
    image = load_sample("nuclei2d").image
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name="nuclei", contrast_limits=(0, int(image.max())))

    shot = viewer.screenshot(canvas_only=True, flash=False)

    assert shot.ndim == 3 and shot.shape[2] == 4 and shot.dtype == np.uint8
    gray = shot[..., :3].astype(float).mean(axis=-1)
    # Not blank: dark background with bright nuclei, as in the data.
    assert gray.std() > 10
    bright_fraction = (gray > 100).mean()
    image_bright_fraction = (image > 0.4 * image.max()).mean()
    assert 0.2 * image_bright_fraction < bright_fraction < 0.9
