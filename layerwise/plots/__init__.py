"""Figures of the layer-wise analyses (PNG at 150 dpi; PDF too when the path ends in .pdf).

One module per figure family; every function takes the tidy table(s), the output path and
the context that names the figure (corpus, model, span, pooling), writes the file and
returns its path (``return_fig=True``: ``(path, figure)``, the figure left open).

==========================  ===========================================================
:func:`layer_heatmaps`      layer x layer similarity within a model, a panel per metric
:func:`cross_model_heatmaps`  layers of model A x layers of model B, a panel per metric
:func:`layer_curves`        probes / convexity / CCA / NMI per layer, a line per model
:func:`feature_stats`       activation statistics per layer of one model
:func:`embedding_grid`      2-D embeddings (methods x layers) coloured by a label
:func:`self_similarity`     frame x frame cosine self-similarity of one utterance
:func:`trajectory_gif`      animated frame trajectory of one utterance across layers
:func:`model_summary`       one page of a model's key curves
:func:`temporal_figures`    self-similarity + trajectory GIF, from the temporal tables
==========================  ===========================================================

The non-interactive Agg backend is selected on import.
"""

from layerwise.plots import style  # first: selects the Agg backend
from layerwise.plots.curves import curve_table, layer_curves
from layerwise.plots.featstats import feature_stats
from layerwise.plots.maps import embedding_grid
from layerwise.plots.similarity import cross_model_heatmaps, layer_heatmaps
from layerwise.plots.style import panel_axes
from layerwise.plots.summary import model_summary
from layerwise.plots.temporal import self_similarity, temporal_figures, trajectory_gif

__all__ = [
    "cross_model_heatmaps",
    "curve_table",
    "embedding_grid",
    "feature_stats",
    "layer_curves",
    "layer_heatmaps",
    "model_summary",
    "panel_axes",
    "self_similarity",
    "style",
    "temporal_figures",
    "trajectory_gif",
]
