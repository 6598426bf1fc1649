"""``python -m napari_nucleiseg.cli``: the ``nucleiseg`` command."""

from . import run

run()
