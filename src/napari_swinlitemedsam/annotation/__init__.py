"""The annotation session a widget drives, without Qt or napari (layer 4).

Which box belongs to which object, series bookkeeping, layer <-> model coordinates, the models a
user can choose, and failure explanations: everything the widget decides, testable headless.
"""
