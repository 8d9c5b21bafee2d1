"""Attribution-graph page, circuit-tracer's BOS convention: the checkbox builds the zero_bos graph (no feature node at
position 0, where the default graph has some) and the intervention on a selected feature uses the same setting."""

from __future__ import annotations

import pytest
from app_testkit import errors, plotly_figure
from test_page_attribution_graph import PRESET, _open, bundled_with_transcoders  # noqa: F401 (the fixture)


def _feature_ids(at) -> list[str]:
    nodes = [t for t in plotly_figure(at, "graph_chart")["data"] if t.get("name") == "nodes"][0]
    return [c[1] for c in nodes["customdata"] if not c[1].startswith(("E_", "4_")) and "_-1_" not in c[1]]


def _snippet(at, request_name: str) -> str:
    return [c.value for c in at.code if f"{request_name}(" in c.value][0]


@pytest.mark.usefixtures("bundled_with_transcoders")
def test_the_zero_bos_checkbox_builds_that_graph_and_intervenes_on_it():
    query = {"prompt": PRESET["prompt"], "target": PRESET["answer"]}
    at = _open(**query)
    assert not at.exception and errors(at) == [], [e.value for e in at.exception] + errors(at)
    assert at.checkbox(key="zero_bos").value is False
    assert any(i.split("_")[2] == "0" for i in _feature_ids(at))  # the default graph: features at position 0
    at.checkbox(key="zero_bos").check().run()
    assert not at.exception and errors(at) == [], [e.value for e in at.exception] + errors(at)
    features = _feature_ids(at)
    assert features and all(i.split("_")[2] != "0" for i in features)
    assert "zero_bos=True" in _snippet(at, "AttributionGraphRequest")
    assert any("BOS position zeroed" in c.value for c in at.caption)
    # A selected feature of that graph: the intervention's request carries the same setting.
    at = _open(**query, zero_bos="1", selected=features[0])
    assert not at.exception and errors(at) == [], [e.value for e in at.exception] + errors(at)
    assert at.checkbox(key="zero_bos").value is True
    assert "zero_bos=True" in _snippet(at, "GraphInterventionRequest")
    tables = {tuple(d.value.columns)[0]: d.value for d in at.dataframe}
    assert len(tables["target"]) == 1 and tables["target"].iloc[0]["target"] == "␣example"
    at.checkbox(key="zero_bos").uncheck().run()  # the same feature, the default graph: no zero_bos in the request
    assert not at.exception and errors(at) == []
    assert "zero_bos" not in _snippet(at, "GraphInterventionRequest")
