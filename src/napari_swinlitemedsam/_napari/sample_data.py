"""Sample data for napari's File > Open Sample menu: small real images bundled with the package.

Each sample opens as its image (with its physical scale) and its reference labels, hidden, to
compare against.
"""

from __future__ import annotations

from napari_swinlitemedsam.io.samples import load_sample


def _layers(name: str) -> list[tuple]:
    sample = load_sample(name)
    scale = tuple(sample.spacing) if sample.image.ndim == 3 else None
    frame = {"scale": scale} if scale is not None else {}
    metadata = {
        "description": sample.description,
        "source": sample.source,
        "licence": sample.licence,
    }
    if sample.info.modality == "CT":  # the soft-tissue window (W400 / L40), as PACS viewers open
        frame["contrast_limits"] = (-160.0, 240.0)
    return [
        (sample.image, {"name": name, "metadata": metadata, **frame}, "image"),
        (
            sample.labels,
            {
                "name": f"{name} reference",
                "visible": False,
                "opacity": 0.5,
                **{k: v for k, v in frame.items() if k != "contrast_limits"},
            },
            "labels",
        ),
    ]


def nuclei2d() -> list[tuple]:
    """Fluorescent nuclei, (512, 512), with 125 reference nuclei."""
    return _layers("nuclei2d")


def nuclei3d() -> list[tuple]:
    """Fluorescent nuclei stack, (60, 256, 256), with 20 reference nuclei."""
    return _layers("nuclei3d")


def brain_mr() -> list[tuple]:
    """Head MR stack, (60, 217, 181), with brain and ventricle reference labels."""
    return _layers("brain_mr")


def head_ct() -> list[tuple]:
    """Head CT stack in HU, (36, 240, 240), with bone and intracranial reference labels."""
    return _layers("head_ct")
