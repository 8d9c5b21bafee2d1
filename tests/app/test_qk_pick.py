"""ui.qk_pick: a clicked attribution-graph edge picks the head and positions of the QK explanation; the page uses it."""

from __future__ import annotations

import pytest
import torch

from test_page_attribution_graph import PRESET, _open, bundled_with_transcoders  # noqa: F401  (fixture)
from ui.qk_pick import edge_qk_choice


@pytest.fixture(scope="module")
def graph_and_patterns():
    from graph_support import random_transcoders

    from lens_core import HookedTransformer
    from lens_core.experiments.graphs.attribution_graph import AttributionGraphRequest, attribution_graph
    from lens_core.experiments.graphs.graph_json import node_ids

    model = HookedTransformer.from_pretrained("default")
    tset = random_transcoders(model, d_sae=256, k=48, seed=1)
    ids = tuple(model.to_tokens(PRESET["prompt"])[0].tolist())
    result = attribution_graph(model, AttributionGraphRequest(tokens=ids, targets=(int(model.to_single_token(PRESET["answer"])),)),
                               transcoders=tset)
    _, cache = model.run_with_cache(torch.tensor([ids]))
    patterns = torch.stack([cache["pattern", l][0] for l in range(model.cfg.n_layers)])  # [layer, head, q, k]
    return result, patterns, node_ids(result)


def _edges(result, ids):
    targets, sources = result.adjacency.nonzero(as_tuple=True)
    return [(ids[s], ids[t], s, t) for t, s in zip(targets.tolist(), sources.tolist())]


def test_an_edge_across_positions_picks_the_head_that_attends_most_between_them(graph_and_patterns):
    result, patterns, ids = graph_and_patterns
    crossing = [e for e in _edges(result, ids) if result.node_pos[e[2]] != result.node_pos[e[3]]]
    assert crossing
    n_layers, n_heads = patterns.shape[:2]
    for source, target, s, t in crossing[:50]:
        choice, said = edge_qk_choice(result, f"{source}->{target}", patterns)
        i, j = result.node_pos[t], result.node_pos[s]
        # The layers that can carry it, by hand: after the source is written, up to where the target reads.
        first = 0 if result.node_kind[s] == "embedding" else result.node_layer[s] + 1
        last = n_layers - 1 if result.node_kind[t] == "logit" else result.node_layer[t]
        assert choice["qk_query"] == i and choice["qk_key"] == j
        assert first <= choice["qk_layer"] <= last
        best = max(float(patterns[l, h, i, j]) for l in range(first, last + 1) for h in range(n_heads))
        assert float(patterns[choice["qk_layer"], choice["qk_head"], i, j]) == best
        assert f"L{choice['qk_layer']}H{choice['qk_head']}" in said


def test_edges_attention_cannot_explain_pick_nothing_and_say_why(graph_and_patterns):
    result, patterns, ids = graph_and_patterns
    same = next(e for e in _edges(result, ids) if result.node_pos[e[2]] == result.node_pos[e[3]])
    choice, said = edge_qk_choice(result, f"{same[0]}->{same[1]}", patterns)
    assert choice is None and "stays at position" in said
    choice, said = edge_qk_choice(result, "nope->E_1_0", patterns)
    assert choice is None and "not in this graph" in said


def test_clicking_an_edge_sets_the_qk_widgets(bundled_with_transcoders):
    from app_testkit import errors, plotly_figure

    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"])
    assert not at.exception and errors(at) == []
    mids = next(t for t in plotly_figure(at, "graph_chart")["data"] if t.get("name") == "edges")
    pos = lambda node: int(node.rsplit("_", 1)[1])  # noqa: E731  (node ids end in their position)
    edge = next(c[1] for c in mids["customdata"] if pos(c[1].split("->")[0]) != pos(c[1].split("->")[1]))
    source, target = edge.split("->")
    # What the browser sends for a click on the edge's midpoint marker.
    at.session_state["graph_chart"] = {"selection": {"points": [{"customdata": ["edge", edge]}], "point_indices": [0],
                                                     "box": [], "lasso": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.slider(key="qk_query").value == pos(target) and at.number_input(key="qk_key").value == pos(source)
    said = " ".join(i.value for i in at.info)
    assert f"L{at.slider(key='qk_layer').value}H{at.slider(key='qk_head').value}" in said
    assert any(d.value.columns[0].startswith("query node") for d in at.dataframe)  # the explanation for that pick
