"""napari-nucleiseg: find every nucleus, correct it, and retrain on the corrections.

The package root imports nothing heavy: the core modules (``io``, ``metrics``)
work without napari or Qt, and ``_napari`` holds the napari glue.
"""

__version__ = "0.1.0"
