"""On-disk formats: the HDF5 feature store, pooled matrices, TSV tables and atomic writes."""
