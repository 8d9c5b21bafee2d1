"""Attribution-graph page: no transcoders (message + the bundled model offered), the graph on the bundled model with
transcoders saved to a temporary directory, supernodes and selection from the URL, interventions, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from app_testkit import APP, REPO_ROOT, assert_says_no_transcoders, errors, plotly_figure

PAGE = "app_pages/12_Attribution_graph.py"
PRESET = json.loads((REPO_ROOT / "lens_core" / "default_model" / "presets.json").read_text())[0]


def test_a_model_without_transcoders_says_so(app_settings):
    assert_says_no_transcoders(PAGE)


@pytest.fixture
def bundled_with_transcoders(tmp_path, monkeypatch):
    """The bundled model with random top-k transcoders in a temporary directory (the real ones are trained
    separately); the app's settings point the cache into tmp_path."""
    from lens_core import HookedTransformer
    from lens_core.features import TranscoderSet, save_transcoders, transcoder
    from graph_support import random_transcoders

    model = HookedTransformer.from_pretrained("default")
    tset = random_transcoders(model, d_sae=256, k=48, seed=1)  # 148 nodes a token: 8192 fit 55
    directory = save_transcoders(TranscoderSet(tset.by_layer, model_name="default", processing=model.processing),
                                 tmp_path / "transcoders")
    from lens_core.features.dashboards import build_dashboards, save_dashboards

    windows = model.to_tokens([PRESET["prompt"], "def size(data):\n    return len(data)"], padding_side="right")
    lengths = torch.tensor([len(model.to_tokens(PRESET["prompt"])[0]), len(model.to_tokens("def size(data):\n    return len(data)")[0])])
    dash = build_dashboards(model, tset, windows, lengths, kinds=("feature",), n_top=4, before=3, after=1)
    save_dashboards(dash, directory, {"windows": 2})
    monkeypatch.setattr(transcoder, "DEFAULT_TRANSCODERS_DIR", directory)
    text = (REPO_ROOT / "settings.toml").read_text(encoding="utf-8")
    text = text.replace('directory = ".cache/results"', f"directory = {str(tmp_path / 'cache')!r}")
    (tmp_path / "settings.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(tmp_path / "settings.toml"))
    return model


def _open(**query):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(PAGE)
    at.run()
    return at


def test_graph_selection_supernodes_and_intervention(bundled_with_transcoders):
    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"])
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    fig = plotly_figure(at, "graph_chart")
    nodes = [t for t in fig["data"] if t.get("name") == "nodes"][0]
    ids = [c[1] for c in nodes["customdata"]]
    assert any(i.startswith("E_") for i in ids) and any(i.startswith("4_") for i in ids)  # embeddings, logits
    feature_ids = [i for i in ids if not i.startswith(("E_", "4_")) and "_-1_" not in i]
    assert feature_ids
    # Selection and a supernode from the URL: the intervention tables and the supernode table appear.
    groups = json.dumps([["my group", feature_ids[0]]])
    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"], selected=feature_ids[0], supernodes=groups)
    assert not at.exception and errors(at) == [], [e.value for e in at.exception] + errors(at)
    assert at.multiselect(key="selected").value == [feature_ids[0]]
    # Hover labels and the clicked feature's card come from the dashboards.
    fig = plotly_figure(at, "graph_chart")
    hovers = [h for t in fig["data"] if t.get("name") == "nodes" for h in t["hovertext"]]
    assert any(" on " in h and "→" in h for h in hovers)
    nodes = [t for t in fig["data"] if t.get("name") == "nodes"][0]
    colors = dict(zip([c[1] for c in nodes["customdata"]], nodes["marker"]["color"]))
    assert colors[feature_ids[0]] == "rgb(25, 25, 25)" and colors[feature_ids[1]] != "rgb(25, 25, 25)"  # selected: dark
    assert any("fires on" in d.value.columns for d in at.dataframe)
    tables = {tuple(d.value.columns)[0]: d.value for d in at.dataframe}
    assert "my group" in tables["supernode"]["supernode"].tolist()
    changes = tables["target"]
    assert len(tables["feature"]) == 20 and "real model, attention and norms frozen" in tables["feature"].columns
    assert len(changes) == 1 and changes.iloc[0]["target"] == "␣example"
    assert at.query_params["supernodes"] == [groups] or at.query_params["supernodes"] == groups


def test_bad_inputs(bundled_with_transcoders):
    at = _open(prompt=PRESET["prompt"], target=" example example")
    assert not at.exception
    assert any("not a single token" in e for e in errors(at))
    long_prompt = " ".join(["own thread sequences stdout non example useful"] * 15)
    at = _open(prompt=long_prompt)
    assert not at.exception
    # Over the dense limit the feature-node budget (issue 21) gives a graph, not an error.
    assert errors(at) == [] and plotly_figure(at, "graph_chart")["data"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_graph_is_shown_computed_in_float32(bundled_with_transcoders, dtype):
    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"], dtype=dtype)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [], errors(at)
    fig = plotly_figure(at, "graph_chart")
    assert [t for t in fig["data"] if t.get("name") == "nodes"][0]["customdata"]
    notices = " ".join(i.value for i in at.info)
    assert f"computed in float32 from the model's {dtype} forward pass" in notices, notices


def test_the_bundled_model_is_offered_and_switches(bundled_with_transcoders, tiny_model_dir, tmp_path, monkeypatch):
    from tiny_model import write_settings

    path = write_settings(tmp_path / "two_models.toml", tiny_model_dir, tmp_path / "cache2")
    text = path.read_text().replace(f"allowlist = [{str(tiny_model_dir)!r}]", f"allowlist = [{str(tiny_model_dir)!r}, 'default']")
    path.write_text(text.replace("max_prompt_tokens = 40", "max_prompt_tokens = 100"))
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    at = _open(prompt=PRESET["prompt"])
    assert at.sidebar.selectbox(key="model").value == str(tiny_model_dir)
    assert any("no transcoders are bundled" in w.value for w in at.warning)
    at.button(key="use_bundled").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="model").value == "default"
    assert plotly_figure(at, "graph_chart")["data"] and errors(at) == []


def test_a_graph_over_the_node_budget_is_worded_plainly():
    from lens_core.experiments.graphs._targets import node_budget_error
    from ui.attribution_graph_view import graph_failure

    shown = graph_failure(ValueError(node_budget_error(15691, 8192, 106, 148.0)), 106)
    assert shown == ("This prompt is too long for an attribution graph: its graph would have 15,691 nodes, more than the "
                     "8,192 this server builds. Prompts of up to about 55 tokens fit; this one has 106. Shorten the prompt.")
    assert graph_failure(ValueError("something else"), 3) is None


def test_a_budget_from_the_url_gives_a_graph_within_it_with_a_notice_and_the_scores(bundled_with_transcoders):
    at = _open(prompt=PRESET["prompt"], target=PRESET["answer"], budget="16")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.number_input(key="budget").value == 16
    assert any("budget" in i.value.lower() for i in at.info), [i.value for i in at.info]
    nodes = [t for t in plotly_figure(at, "graph_chart")["data"] if t.get("name") == "nodes"][0]
    features = [c[1] for c in nodes["customdata"] if not c[1].startswith(("E_", "4_")) and "_-1_" not in c[1]]
    assert 0 < len(features) <= 16
    labels = {m.label: m.value for m in at.metric}
    assert float(labels["Replacement score"]) <= 1 and float(labels["Completeness score"]) <= 1


def _drawn_labels(fig: dict) -> list[tuple[float, float, float, str]]:
    """(x, y, y shift px, text) of every label drawn on the chart: node texts and annotations."""
    import html

    out = []
    for trace in fig["data"]:
        if trace.get("name") == "nodes" and "text" in trace.get("mode", ""):
            out += [(x, y, 0.0, html.unescape(t)) for x, y, t in zip(trace["x"], trace["y"], trace["text"]) if t]
    out += [(a["x"], a["y"], a.get("yshift", 0.0), html.unescape(a["text"])) for a in fig["layout"].get("annotations", [])]
    return out


def test_the_graph_spreads_over_the_width_with_readable_target_labels(bundled_with_transcoders):
    """Issue 23: nodes were squeezed into a sliver of their position and the targets' labels piled on one another;
    a target that is a partial UTF-8 character read as a bare replacement character."""
    from app_testkit import plotly_array
    from ui.graph_layout import ASSUMED_PLOT_PX, LINE_PX, text_px

    at = _open(prompt=PRESET["prompt"])  # no target: the top predictions, ten here, one a partial character
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    fig = plotly_figure(at, "graph_chart")
    nodes = [t for t in fig["data"] if t.get("name") == "nodes"][0]
    xs, ys = plotly_array(nodes["x"]), plotly_array(nodes["y"])
    n_positions = len(bundled_with_transcoders.to_tokens(PRESET["prompt"])[0])
    x_range = fig["layout"]["xaxis"].get("range") or [float(xs.min()) - 0.5, float(xs.max()) + 0.5]
    px_per_unit = ASSUMED_PLOT_PX / (x_range[1] - x_range[0])
    # Every row's nodes keep apart: no two closer than 4 px on the narrowest chart laid out for.
    for row in set(ys.tolist()):
        row_x = sorted(xs[ys == row].tolist())
        if len(row_x) > 1:
            assert min(b - a for a, b in zip(row_x, row_x[1:])) * px_per_unit >= 4.0, (row, len(row_x))
    # The targets' labels: none overlap, none is a bare replacement character, every target is drawn.
    labels = _drawn_labels(fig)
    top = max(ys.tolist())
    targets = [lab for lab in labels if lab[1] == top]
    assert len(targets) == sum(1 for c in nodes["customdata"] if c[1].startswith("4_")) >= 5
    boxes = [((x - x_range[0]) * px_per_unit - text_px(t) / 2, (x - x_range[0]) * px_per_unit + text_px(t) / 2,
              shift, shift + LINE_PX) for x, _, shift, t in targets]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]), (a, b)
    shown = [t for *_, t in labels] + list(nodes["hovertext"]) + [c.value for c in at.caption]
    assert not [s for s in shown if "\ufffd" in s]
    # The partial character: its byte and id (the caption is Markdown-escaped).
    assert any("<0x92> (id 241)" in c.value.replace("\\", "") for c in at.caption)
