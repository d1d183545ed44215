"""The napari glue (private): the Box annotator widget and its panels, the worker runner, and the
reader, writer and sample-data contributions the npe2 manifest (``napari.yaml``) points to.

The only package that imports napari, Qt or magicgui.
"""
