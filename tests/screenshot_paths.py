"""Where GUI tests put their screenshots.

By default in the test's temporary folder, so a test run leaves the working tree as it was.
With ``UPDATE_DOC_SCREENSHOTS=1`` in the environment they go to ``docs/images/`` (that is how
the pictures in the documentation are made: ``UPDATE_DOC_SCREENSHOTS=1 python -m pytest
tests/test_screenshots.py tests/test_finetune_panel.py tests/test_series_widget.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

DOC_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """``docs/images/<name>`` when updating the docs, else ``<tmp_path>/<name>``."""
    folder = DOC_IMAGES if os.environ.get("UPDATE_DOC_SCREENSHOTS") == "1" else Path(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
