"""ui.circuit_view: the circuit graph colours edges by what they do to the answer, and says so."""

from __future__ import annotations

import pytest

from lens_core.experiments.edge_circuits.circuit_graph import edge_table, select_circuit
from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, edge_attribution
from ui.circuit_view import circuit_graph_figure
from ui.graph_chart import NEGATIVE_COLOR, POSITIVE_COLOR

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
HELPS, HURTS = "helps the answer", "hurts the answer"


@pytest.fixture(scope="module")
def scores(model):
    return edge_attribution(model, EdgeAttributionRequest(method="eap", clean_prompt=CLEAN, corrupted_prompt=CORRUPTED,
                                                          answer=" Mary", wrong_answer=" John"))


def test_edges_that_support_the_answer_are_drawn_as_helping(scores, model):
    # The score estimates the metric's change when the edge alone carries the corrupted value, so a
    # negative score is an edge whose clean value raises the logit difference: it helps the answer.
    mask = select_circuit(scores, threshold=0.0)
    rows = edge_table(scores, mask)
    assert any(r["score"] < 0 for r in rows) and any(r["score"] > 0 for r in rows)
    fig, table = circuit_graph_figure(scores, mask, model.cfg.n_heads, model.cfg.n_layers)
    mids = next(t for t in fig.data if t.name == "edges")
    blue, red = POSITIVE_COLOR.format(alpha=1), NEGATIVE_COLOR.format(alpha=1)
    by_id = dict(zip([c[1] for c in mids.customdata], zip(mids.marker.color, mids.hovertext)))
    for row in rows:
        color, hover = by_id[f"{row['sender']}->{row['receiver']}"]
        if row["score"] == 0:
            assert HELPS not in hover and HURTS not in hover
            continue
        helps = row["score"] < 0
        assert color == (blue if helps else red), row
        assert (HELPS if helps else HURTS) in hover
    legend = [t.name for t in fig.data if t.showlegend]
    assert legend == [HELPS, HURTS]
    assert {HELPS, HURTS} <= set(table["effect"])
    assert list(table["effect"]) == [HELPS if s < 0 else HURTS if s > 0 else "no effect" for s in table["score"]]
