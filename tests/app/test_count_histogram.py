"""ui.charts.count_histogram / log_count_axis: a log count axis with ticks at the powers of ten."""

from __future__ import annotations

import numpy as np
import pytest

from ui.charts import count_histogram, log_count_axis


@pytest.mark.parametrize("max_count,top", [(1, 1), (7, 10), (10, 10), (11, 100), (762, 1000), (12_345, 100_000)])
def test_ticks_are_decades_up_to_the_tallest_bar(max_count, top):
    axis = log_count_axis(max_count)
    assert axis["type"] == "log" and axis["tickvals"][-1] == top and axis["tickvals"][0] == 1
    assert all(b == 10 * a for a, b in zip(axis["tickvals"], axis["tickvals"][1:]))
    assert axis["ticktext"][-1] == f"{top:,}"  # "1,000", not "1k" or "2 5 2 5"
    assert 10 ** axis["range"][0] < 1 and 10 ** axis["range"][1] > top


def test_histogram_bins_match_numpy_and_skip_non_finite():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=5000), [np.nan, np.inf]])
    fig = count_histogram(values, bins=50, title="<b>t</b>", y_title="tokens")
    trace = fig.data[0]
    assert len(trace.x) == 5000
    counts, edges = np.histogram(values[np.isfinite(values)], bins=50)
    assert trace.xbins.start == pytest.approx(edges[0]) and trace.xbins.size == pytest.approx(edges[1] - edges[0])
    assert fig.layout.yaxis.tickvals[-1] >= counts.max() > fig.layout.yaxis.tickvals[-1] / 10
    assert fig.layout.title.text == "&lt;b&gt;t&lt;/b&gt;"
    assert len(count_histogram([], bins=10).data) == 0  # no values: an empty chart, no error
