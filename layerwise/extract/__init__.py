"""Extract: load a speech encoder and write every layer's frames of a shard (or, with
``extract.store: pooled``, their pooled rows) to the HDF5 store."""
