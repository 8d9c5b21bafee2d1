"""ui.graph_chart: the generic layered graph (used by circuit discovery and attribution graphs)."""

import pandas as pd
import pytest

from ui.graph_chart import NEGATIVE_COLOR, POSITIVE_COLOR, layered_graph, selected_ids

NODES = [
    {"id": "embed", "x": 0, "y": 0, "label": "<embed>"},
    {"id": "a", "x": 0, "y": 1, "label": "a", "hover": "score 1"},
    {"id": "b", "x": 1, "y": 1, "label": "b"},
    {"id": "logits", "x": 0, "y": 2, "label": "logits"},
]
EDGES = [
    {"source": "embed", "target": "a", "weight": 2.0},
    {"source": "embed", "target": "b", "weight": -0.1},
    {"source": "a", "target": "logits", "weight": -1.0},
]


def test_edges_binned_by_sign_and_width_with_midpoint_hover():
    fig = layered_graph(pd.DataFrame(NODES), EDGES, weight_name="score", width_bins=4)
    lines = [t for t in fig.data if t.mode == "lines"]
    # 2.0 -> top positive bin, -1.0 -> negative bin 2 of 4, -0.1 -> negative bin 0: three traces.
    assert len(lines) == 3
    assert max(t.line.width for t in lines if t.line.color.startswith(POSITIVE_COLOR[:10])) == pytest.approx(8.0)
    assert len([t for t in lines if t.line.color.startswith(NEGATIVE_COLOR[:10])]) == 2
    mids = next(t for t in fig.data if t.name == "edges")
    assert list(mids.x) == [0.0, 0.5, 0.0] and list(mids.y) == [0.5, 0.5, 1.5]
    assert "&lt;embed&gt; → a" in mids.hovertext[0] and "score: 2" in mids.hovertext[0]
    nodes = next(t for t in fig.data if t.name == "nodes")
    assert nodes.text[0] == "&lt;embed&gt;"  # labels are escaped
    assert [list(c) for c in nodes.customdata][1] == ["node", "a"]


def test_bad_tables_are_reported():
    with pytest.raises(ValueError, match="not among the nodes"):
        layered_graph(NODES, [{"source": "a", "target": "zzz", "weight": 1.0}])
    with pytest.raises(ValueError, match="unique"):
        layered_graph(NODES + [NODES[0]], [])
    with pytest.raises(ValueError, match="missing"):
        layered_graph([{"id": "a", "x": 0}], [])


def test_empty_graph_and_selection_events():
    fig = layered_graph([], [])
    assert len(fig.data) == 0
    event = {"selection": {"points": [{"customdata": ["node", "a"]}, {"customdata": ["edge", "a->logits"]}, {"x": 1}]}}
    assert selected_ids(event) == (["a"], ["a->logits"])
    assert selected_ids(None) == ([], [])
