"""Many cases at once: the per-case work shared by the single-process commands and a Dask
cluster (one task per case, one model per worker process), and the manifest that lets a run
resume. Headless: no argparse (that is ``cli``), no napari."""
