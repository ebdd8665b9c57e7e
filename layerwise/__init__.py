"""layerwise: extract every layer of a speech model once, then analyse how the representation changes."""

__version__ = "0.1.0"
