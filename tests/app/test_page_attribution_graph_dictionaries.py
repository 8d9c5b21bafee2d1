"""The Attribution graph page with a cross-layer transcoder and with skip transcoders (circuit-tracer's files, random,
listed in the settings' [features] table for the bundled model): the graph is drawn, its kind shown, no error."""

from __future__ import annotations

import pytest

from app_settings import write_settings
from app_testkit import errors, open_page, plotly_figure
from dictionary_writers import write_ct_clt, write_ct_set

GRAPH = "app_pages/12_Attribution_graph.py"


@pytest.mark.parametrize("kind", ["clt", "skip"])
def test_graph_page_draws_skip_and_cross_layer_graphs(kind, tmp_path, monkeypatch):
    source = tmp_path / kind
    if kind == "clt":
        write_ct_clt(source, n_layers=3, d_model=128, d_sae=48)
    else:
        write_ct_set(source, n_layers=3, d_model=128, d_sae=64, skip=True)
    path = write_settings(tmp_path / "settings.toml", tmp_path / "cache",
                          features=f'default = [{{ source = {str(source)!r}, label = "random {kind}" }}]')
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    at = open_page(GRAPH, prompt="def add(a, b):\n    return a + b")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [], errors(at)
    from ui.errors import md_escape

    shown = " ".join(c.value for c in at.caption)
    assert md_escape("Cross-layer transcoder · source" if kind == "clt" else "Skip transcoder · source") in shown, shown
    # no advice to build dashboards (that script builds them for the bundled transcoders only)
    assert "held-out dashboards are precomputed only for the bundled transcoders" in shown, shown
    assert "build_feature_dashboards" not in shown, shown
    nodes = [t for t in plotly_figure(at, "graph_chart")["data"] if t.get("name") == "nodes"][0]
    ids = [c[1] for c in nodes["customdata"]]
    assert any(not i.startswith(("E_", "4_")) and "_-1_" not in i for i in ids), ids  # feature nodes drawn
    metric = next(m for m in at.metric if m.label == "Completeness error")
    assert float(metric.value) < 1e-3
