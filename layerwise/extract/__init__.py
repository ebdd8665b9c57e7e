"""Extract: load a speech encoder and write every layer's frames of a shard to the HDF5 store."""
