"""The 3D objects the propagation is measured on, split into a tuning and a report part.

* ``nuclei3d`` (bundled): 20 nuclei of scikit-image's cells3d, labels from an automatic
  segmentation (approximate), on every second slice (30 slices 0.58 µm apart; half the
  encodes). All nuclei lie within slices 17-59; the out-of-focus slices below them stay in,
  as in a user's stack: a propagation that follows noise there counts against it. Odd ids
  tune, even ids report.
* ``brain_mr`` (bundled): Colin27 head MR, 60 axial slices 3 mm apart. The brain (label 1,
  from the skull-stripped image shipped with it) reports; the lateral ventricles (label 2, our
  thresholding, approximate) tune.
* AAL regions on the same 60 slices, when the Debian package ``mricron-data`` is installed
  (``apt-get install mricron-data``; read at run time, never copied into the repository: the
  AAL atlas carries its own terms, Tzourio-Mazoyer et al., NeuroImage 15, 2002, expert manual
  delineation on Colin27). Left-hemisphere regions tune, the right ones report. Sliced exactly
  as ``brain_mr`` was made (``docs/samples.md``), so both share their slices' encodes.
* NeuroMaps regions on the INIA19 rhesus macaque T1 template (same Debian package; Rohlfing
  et al., Front. Neuroinform. 6:27, 2012: the atlas was mapped onto this template by
  registration, so its outlines follow the template's own image approximately; no region
  names ship with it, so regions go by id). A primate, 0.5 mm, another MR contrast and
  field of view: an image unlike Colin27's. Axial, every second slice (64 slices 1 mm apart);
  the hemisphere with the lower ids tunes, the other (id + 1000) reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.io.samples import load_sample

TEMPLATES = Path("/usr/share/mricron/templates")
AAL_FILE = TEMPLATES / "aal.nii.gz"
INIA_IMAGE = TEMPLATES / "inia19-t1-brain.nii.gz"
INIA_LABELS = TEMPLATES / "inia19-NeuroMaps.nii.gz"
#: NeuroMaps ids measured (the other hemisphere is id + 1000): four of the largest labelled
#: regions, each on about half of the 64 slices.
INIA_REGIONS = (54, 55, 147, 193)
INIA_SPACING = (1.0, 0.5, 0.5)
#: AAL regions measured: (left id, right id, name). Deep and mid-sized structures that a box
#: can describe; the cortical ribbons (e.g. precentral gyrus) are left out on purpose.
AAL_REGIONS = (
    (29, 30, "insula"),
    (37, 38, "hippocampus"),
    (71, 72, "caudate"),
    (73, 74, "putamen"),
    (77, 78, "thalamus"),
)


@dataclass(frozen=True)
class Object3D:
    """One object to annotate: its volume's name, (D, H, W) truth, spacing, split."""

    name: str
    volume_name: str
    truth: np.ndarray
    spacing: tuple[float, float, float]
    split: str  # "tune" or "report"


NUCLEI_SLICES = slice(0, 60, 2)


def load_volumes() -> dict[str, np.ndarray]:
    """The (D, H, W) uint8 stacks by name."""
    volumes = {
        "nuclei3d": load_sample("nuclei3d").image[NUCLEI_SLICES],
        "brain_mr": load_sample("brain_mr").image,
    }
    inia = _inia_axial(INIA_IMAGE, np.float32)
    if inia is not None:
        # the organisers' non-CT rule, over the whole volume (as the plugin converts a stack)
        volumes["inia19"] = to_uint8(inia, modality="mr")
    return volumes


def _inia_axial(path: Path, dtype) -> np.ndarray | None:
    """An INIA19 file as (D, H, W) axial slices, every second one; None if not installed."""
    if not path.is_file():
        return None
    import nibabel

    image = nibabel.as_closest_canonical(nibabel.load(str(path)))
    data = np.asarray(image.dataobj).astype(dtype)  # (x, y, z), RAS
    # z up -> slices, anterior at the top of each slice, the subject's right on the left
    return np.ascontiguousarray(data.transpose(2, 1, 0)[::2, ::-1, :])


def aal_on_brain_mr() -> np.ndarray | None:
    """AAL labels resliced like ``brain_mr`` (D, H, W); None without ``mricron-data``."""
    if not AAL_FILE.is_file():
        return None
    import nibabel

    atlas = nibabel.as_closest_canonical(nibabel.load(str(AAL_FILE)))
    labels = np.asarray(atlas.dataobj).astype(np.int16)  # (x, y, z), RAS
    if labels.shape != (181, 217, 181):
        return None
    return labels.transpose(2, 1, 0)[1::3, ::-1, ::-1]


def objects(split: str = "all") -> list[Object3D]:
    """All measured objects of ``split`` ("tune", "report" or "all")."""
    found: list[Object3D] = []
    nuclei = load_sample("nuclei3d")
    labels = nuclei.labels[NUCLEI_SLICES]
    spacing = (nuclei.spacing[0] * 2, *nuclei.spacing[1:])
    for label in np.unique(labels[labels > 0]):
        part = "tune" if label % 2 else "report"
        found.append(Object3D(f"nucleus {label}", "nuclei3d", labels == label, spacing, part))
    brain = load_sample("brain_mr")
    found.append(Object3D("brain", "brain_mr", brain.labels == 1, brain.spacing, "report"))
    ventricles = brain.labels == 2
    found.append(Object3D("lateral ventricles", "brain_mr", ventricles, brain.spacing, "tune"))
    aal = aal_on_brain_mr()
    if aal is not None:
        for left, right, name in AAL_REGIONS:
            for label, side, part in ((left, "L", "tune"), (right, "R", "report")):
                truth = aal == label
                if truth.any():
                    found.append(Object3D(f"{name} {side}", "brain_mr", truth, brain.spacing, part))
    inia = _inia_axial(INIA_LABELS, np.int16)
    if inia is not None:
        for region in INIA_REGIONS:
            for label, part in ((region, "tune"), (region + 1000, "report")):
                truth = inia == label
                if truth.any():
                    name = f"NeuroMaps {label}"
                    found.append(Object3D(name, "inia19", truth, INIA_SPACING, part))
    return [o for o in found if split == "all" or o.split == split]
