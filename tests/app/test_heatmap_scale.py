"""The shared heatmap: a diverging scale is symmetric around its middle and reaches the strongest cell; tick labels
get automatic margins (token labels are not cut off)."""

from __future__ import annotations

import numpy as np

from ui import charts


def test_diverging_scale_is_symmetric_and_covers_the_data():
    z = np.array([[0.2, -3.5], [1.0, float("nan")]])
    trace = charts.heatmap(z, ["a", "b"], ["x", "y"], zmid=0.0).data[0]
    assert (trace.zmin, trace.zmax, trace.zmid) == (-3.5, 3.5, 0.0)
    trace = charts.heatmap(np.array([[0.5, 0.9]]), ["a", "b"], ["x"], zmid=0.0).data[0]
    assert (trace.zmin, trace.zmax) == (-0.9, 0.9)
    assert charts.heatmap(np.zeros((1, 2)), ["a", "b"], ["x"], zmid=0.0).data[0].zmax == 1.0  # all zero: still a scale


def test_sequential_scale_is_left_to_the_data_and_ticks_have_room():
    fig = charts.heatmap(np.array([[0.1, 0.4]]), ["a long token label", "b"], ["x"])
    assert fig.data[0].zmin is None and fig.data[0].zmax is None
    assert fig.layout.xaxis.automargin is True and fig.layout.yaxis.automargin is True
