"""Circuit discovery page: renders, numbers match the experiments, URL state, exports, bad inputs."""

from __future__ import annotations


import pytest
import torch

from app_testkit import errors, open_page, plotly_figure

PAGE = "app_pages/11_Circuit_discovery.py"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
PAIR = dict(prompt=CLEAN, corrupted=CORRUPTED, answer=" Mary", wrong_answer=" John")


def run_page(**query):
    return open_page(PAGE, **query)


def test_graph_curve_and_numbers_match_the_experiments(app_settings, model):
    at = run_page(**PAIR, method="eap", n_edges="20", ap_sweep="attn_out")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    from lens_core.experiments.interventions.attribution import AttributionPatchingRequest, attribution_patching, correlation
    from lens_core.experiments.edge_circuits.circuit_graph import select_circuit
    from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, edge_attribution
    from lens_core.experiments.edge_circuits.faithfulness import FaithfulnessRequest, circuit_faithfulness
    from lens_core.experiments.interventions.patching import PatchingRequest, activation_patching

    kwargs = dict(clean_prompt=CLEAN, corrupted_prompt=CORRUPTED, answer=" Mary", wrong_answer=" John")
    scores = edge_attribution(model, EdgeAttributionRequest(method="eap", **kwargs))
    mask = select_circuit(scores, n_edges=20)
    faith = circuit_faithfulness(model, FaithfulnessRequest(method="eap", n_edges=20, **kwargs))
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Circuit alone (exact)"]) == pytest.approx(faith.circuit_metric, abs=1e-3)
    assert float(metrics["Clean logit difference"]) == pytest.approx(faith.clean_metric, abs=1e-3)
    assert any(f"**{int(mask.sum())}** of {scores.n_edges} edges" in i.value for i in at.info)

    graph = plotly_figure(at, "circuit_graph")
    mids = next(t for t in graph["data"] if t.get("name") == "edges")
    assert len(mids["customdata"]) == int(mask.sum())  # one hover marker per circuit edge
    assert [t["name"] for t in graph["data"] if t.get("showlegend")] == ["helps the answer", "hurts the answer"]
    assert any("Blue edges help the answer" in c.value for c in at.caption)
    curve = plotly_figure(at, "faithfulness_curve")
    assert list(curve["data"][0]["y"]) == pytest.approx(faith.curve_normalized, abs=1e-4)

    table = at.dataframe[0].value
    assert len(table) == int(mask.sum())
    top = table.iloc[0]
    s, r = scores.senders.index(top["sender"]), scores.receivers.index(top["receiver"])
    assert float(top["score"]) == pytest.approx(float(scores.scores[s, r]), abs=1e-5)

    approx = attribution_patching(model, AttributionPatchingRequest(sweep="attn_out", **kwargs))
    exact = activation_patching(model, PatchingRequest(sweep="attn_out", **kwargs))
    shown = float(next(m.value for m in at.metric if m.label.startswith("Correlation")))
    assert shown == pytest.approx(correlation(exact, approx), abs=1e-3)
    assert {"ap_approx", "ap_exact"} <= {c.proto.id.split("-")[-1] for c in at.get("plotly_chart")}


def test_url_state_and_json_export(app_settings):
    at = run_page(**PAIR, method="eap_ig", ig_steps="2", select_by="threshold", threshold="0", ap_sweep="resid_pre")
    assert not at.exception and errors(at) == []
    assert at.radio(key="method").value == "eap_ig"
    assert at.number_input(key="ig_steps").value == 2
    assert at.radio(key="select_by").value == "threshold"
    assert at.text_input(key="threshold").value == "0"
    assert at.selectbox(key="ap_sweep").value == "resid_pre"
    at.radio(key="method").set_value("eap").run()
    assert at.query_params["method"] in ("eap", ["eap"])
    buttons = [b for b in at.get("download_button") if "json" in b.proto.id]
    assert buttons, "no JSON export"


def test_induction_task_runs_without_prompts(app_settings, model):
    at = run_page(task="induction", task_size="4", task_seq_len="4", method="eap", n_edges="10", ablation="mean")
    assert not at.exception and errors(at) == []
    from lens_core.experiments.edge_circuits.faithfulness import FaithfulnessRequest, circuit_faithfulness

    faith = circuit_faithfulness(model, FaithfulnessRequest(task="induction", task_size=4, task_seq_len=4, method="eap",
                                                            n_edges=10, ablation="mean"))
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Mean-ablated logit difference"]) == pytest.approx(faith.ablated_metric, abs=1e-3)
    assert plotly_figure(at, "circuit_graph")
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("ap_exact")]  # patching needs a pair


@pytest.mark.parametrize(("query", "message"), [
    ({**PAIR, "corrupted": "When Mary went"}, "same number of tokens"),
    ({**PAIR, "corrupted": CLEAN}, "corrupted prompt is the clean prompt"),
    ({**PAIR, "answer": " Mary and John"}, "one token"),
    ({**PAIR, "select_by": "threshold", "threshold": "abc"}, "must be a number"),
    ({**PAIR, "select_by": "threshold", "threshold": "1e9"}, "lower the threshold"),
])
def test_bad_inputs_get_clear_messages(app_settings, query, message):
    at = run_page(**query)
    assert not at.exception
    assert message in " ".join(errors(at)), errors(at)
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("circuit_graph")]


@pytest.mark.parametrize("size", ["0", "100000"])
def test_circuit_size_out_of_range_uses_the_nearest_and_says_so(app_settings, model, size):
    from lens_core.experiments.edge_circuits.edges import build_graph

    total = int(build_graph(model.cfg).allowed.sum())
    at = run_page(**PAIR, method="eap", n_edges=size)
    assert not at.exception
    assert at.number_input(key="n_edges").value == (1 if size == "0" else total)
    notices = " ".join([w.value for w in at.warning] + [i.value for i in at.info] + errors(at))
    assert size in notices


def test_per_position_scores_of_an_edge(app_settings, model):
    at = run_page(**PAIR, method="eap", n_edges="20")
    assert not at.exception and errors(at) == []
    from lens_core.experiments.edge_circuits.edges import EdgeAttributionRequest, edge_attribution

    scores = edge_attribution(model, EdgeAttributionRequest(method="eap", clean_prompt=CLEAN, corrupted_prompt=CORRUPTED,
                                                            answer=" Mary", wrong_answer=" John"))
    chosen = at.selectbox(key="edge_by_pos").value
    sender, receiver = chosen.split(" → ")
    bars = plotly_figure(at, "edge_by_pos_chart")["data"][0]["y"]
    from app_testkit import plotly_array

    expected = scores.scores_by_pos[scores.senders.index(sender), scores.receivers.index(receiver)]
    torch.testing.assert_close(torch.tensor(plotly_array(bars)), expected.double(), atol=1e-5, rtol=1e-4)
