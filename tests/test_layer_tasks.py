"""layer_tasks: one task per layer (or several, with their own arguments), in order, in workers
when asked."""

import os

import numpy as np
import pytest

from layerwise.analyses import layer_tasks, subsample


def _where_and_what(layers, layer, *, scale):
    """The process a task ran in, the layers it was given and its layer's sum, scaled."""
    return os.getpid(), sorted(layers), float(np.asarray(layers[layer]).sum()) * scale


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_each_task_gets_its_own_layer_in_order_and_runs_where_asked(n_jobs):
    layers = subsample.take({f"layer.{i}": np.full((5, 2), float(i)) for i in range(4)},
                            np.array([0, 2, 4]))
    names = ["layer.3", "layer.1", "layer.2"]
    out = layer_tasks.map_layers(_where_and_what, layers, names, n_jobs=n_jobs, progress=False,
                                 desc="test", scale=10)
    assert [given for _, given, _ in out] == [[name] for name in names]
    assert [value for _, _, value in out] == [3 * 6 * 10, 1 * 6 * 10, 2 * 6 * 10]
    in_this_process = [pid == os.getpid() for pid, _, _ in out]
    assert all(in_this_process) if n_jobs == 1 else not any(in_this_process)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_tasks_of_one_layer_get_their_own_arguments_in_order(n_jobs):
    layers = {f"layer.{i}": np.full((4, 3), float(i)) for i in range(3)}
    tasks = [(name, {"scale": scale}) for name in ("layer.2", "layer.0") for scale in (1, 100)]
    out = layer_tasks.map_tasks(_where_and_what, layers, tasks, n_jobs=n_jobs, progress=False,
                                desc="test")
    assert [given for _, given, _ in out] == [["layer.2"]] * 2 + [["layer.0"]] * 2
    assert [value for _, _, value in out] == [2 * 12, 2 * 12 * 100, 0, 0]
