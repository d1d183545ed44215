"""Files in and out (layer 3): challenge ``.npz`` cases, images and stacks, label maps, and the
bundled samples. Reading never needs napari."""
