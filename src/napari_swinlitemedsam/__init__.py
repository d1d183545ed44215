"""napari-swinlitemedsam: box-prompted segmentation with Swin-LiteMedSAM and LiteMedSAM.

Importing the package is cheap: torch, numpy and napari are imported only by the
sub-packages that need them (``model`` needs torch, ``inference`` adds numpy, the
``_``-prefixed glue modules add napari and Qt and are reached through the npe2 manifest).
"""

__version__ = "0.1.0"
