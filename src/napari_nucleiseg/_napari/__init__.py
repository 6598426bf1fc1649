"""napari glue: reader, sample data and widgets. The only part that imports napari or Qt."""
