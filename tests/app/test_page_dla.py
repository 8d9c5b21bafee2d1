"""Direct logit attribution page: renders, numbers match transformers and the experiment, URL state, bad inputs, presets."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import (REPO_ROOT, assert_message_and_no_chart, errors, hf_logits, one_line_guesses, open_page,
                        plotly_array, plotly_figure)

PAGE = "app_pages/4_Direct_logit_attribution.py"
PROMPT = "When Mary and John went to the store, John gave a drink to"
CHARTS = ["dla_accumulated", "dla_decomposed", "dla_heads", "dla_neurons"]


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def y_of(at, key):
    return torch.tensor(plotly_array(plotly_figure(at, key)["data"][0]["y"]))


def test_page_renders_every_chart_with_the_models_guesses_as_defaults(app_settings, tiny_model_dir):
    at = run_page(prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    for key in CHARTS:
        assert plotly_figure(at, key)["data"]
    tok, logits = hf_logits(tiny_model_dir, PROMPT)
    ranked = one_line_guesses(tok, logits[-1], 8)
    assert tok.encode(at.text_input(key="answer").value, add_special_tokens=False) == ranked[:1]
    # The wrong answer: the likeliest other guess spelled like the answer (a leading space or not), by hand.
    spaced = tok.decode([ranked[0]])[:1].isspace()
    expected = next(i for i in ranked[1:] if tok.decode([i])[:1].isspace() == spaced)
    assert tok.encode(at.text_input(key="wrong_answer").value, add_special_tokens=False) == [expected]


def test_numbers_match_transformers_and_the_experiment(app_settings, tiny_model_dir):
    at = run_page(prompt=PROMPT, answer=" Mary", wrong_answer=" John", position="10", layer="0", n_neurons="5")
    assert not at.exception and errors(at) == []
    tok, logits = hf_logits(tiny_model_dir, PROMPT)
    (mary,), (john,) = tok.encode(" Mary", add_special_tokens=False), tok.encode(" John", add_special_tokens=False)
    actual = float(logits[10, mary] - logits[10, john])

    # The shown metric is the model's logit difference at the chosen position, and the components plus the
    # biases add up to it (the final norm's scale frozen).
    metrics = {m.label: float(m.value) for m in at.metric}
    assert metrics[next(k for k in metrics if k.startswith("Model's"))] == pytest.approx(actual, abs=2e-3)
    decomposed = y_of(at, "dla_decomposed")
    bias = metrics["Biases (final norm + unembedding)"]
    assert float(decomposed.sum()) + bias == pytest.approx(actual, abs=5e-3)
    assert float(y_of(at, "dla_accumulated")[-1]) + bias == pytest.approx(actual, abs=5e-3)

    from lens_core import HookedTransformer
    from lens_core.experiments.views.dla import DLARequest, direct_logit_attribution

    model = HookedTransformer.from_pretrained(str(tiny_model_dir))
    ref = direct_logit_attribution(model, DLARequest(prompt=PROMPT, answer=" Mary", wrong_answer=" John", position=10,
                                                     neuron_layer=0, top_k_neurons=5))
    torch.testing.assert_close(decomposed, ref.decomposed.double(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(y_of(at, "dla_accumulated"), ref.accumulated.double(), atol=1e-6, rtol=1e-5)
    heads = torch.tensor(plotly_array(plotly_figure(at, "dla_heads")["data"][0]["z"]))
    torch.testing.assert_close(heads, ref.heads.double(), atol=1e-6, rtol=1e-5)
    # Top neurons: the five largest |attribution| of layer 0, in the table and the bar chart.
    table = at.dataframe[0].value
    assert list(table["neuron"]) == ref.top_neurons.tolist()
    assert (table["layer"] == 0).all()
    torch.testing.assert_close(y_of(at, "dla_neurons"), ref.neurons[ref.top_neurons].double(), atol=1e-6, rtol=1e-5)
    assert heads.shape == (model.cfg.n_layers, model.cfg.n_heads)


def test_empty_wrong_answer_attributes_the_answers_logit(app_settings, tiny_model_dir):
    at = run_page(prompt=PROMPT, answer=" Mary", wrong_answer="")
    assert not at.exception and errors(at) == []
    tok, logits = hf_logits(tiny_model_dir, PROMPT)
    (mary,) = tok.encode(" Mary", add_special_tokens=False)
    metrics = {m.label: float(m.value) for m in at.metric}
    shown = metrics[next(k for k in metrics if k.startswith("Model's"))]
    # lens_core centres the unembedding by default (softmax ignores the mean logit), so the answer's logit
    # is transformers' logit minus the mean logit at that position.
    assert shown == pytest.approx(float(logits[-1, mary] - logits[-1].mean()), abs=2e-3)


def test_url_restores_every_input(app_settings):
    at = run_page(prompt=PROMPT, answer=" Mary", wrong_answer=" John", position="4", layer="0", n_neurons="3")
    assert not at.exception
    assert at.text_input(key="answer").value == " Mary"
    assert at.text_input(key="wrong_answer").value == " John"
    assert at.slider(key="position").value == 4
    assert at.slider(key="layer").value == 0
    assert at.slider(key="n_neurons").value == 3
    assert len(at.dataframe[0].value) == 3
    at.slider(key="position").set_value(6).run()
    assert at.query_params["position"] in ("6", ["6"])


@pytest.mark.parametrize(("query", "message"), [
    ({"answer": "", "wrong_answer": " John"}, "empty"),
    ({"answer": " Mary John", "wrong_answer": " John"}, "not a single token"),
    ({"answer": " Mary", "wrong_answer": " store"}, "not a single token"),
])
def test_bad_answers_show_their_message_and_no_chart(app_settings, query, message):
    at = run_page(prompt=PROMPT, **query)
    assert_message_and_no_chart(at, message)


def test_empty_prompt_shows_its_message(app_settings):
    at = run_page(prompt="", answer=" Mary")
    assert_message_and_no_chart(at, "empty", in_sidebar=True)


def test_ioi_preset_runs_on_a_gpt2_named_model(gpt2_named_settings):
    at = run_page(prompt=PROMPT)
    next(b for b in at.button if b.label == "IOI").click().run()
    assert not at.exception and errors(at) == [], errors(at)
    assert at.text_input(key="answer").value == " John" and at.text_input(key="wrong_answer").value == " Mary"
    for key in CHARTS:
        assert plotly_figure(at, key)["data"]


BUNDLED = REPO_ROOT / "lens_core" / "default_model"


@pytest.mark.skipif(not (BUNDLED / "presets.json").exists(), reason="the bundled model's presets.json is not committed yet")
def test_bundled_presets_metric_is_the_models_logit_difference(bundled_settings):
    at = run_page()
    names = [b.label for b in at.button if (b.key or "").startswith("preset_")]
    for name in names:
        next(b for b in at.button if b.label == name).click().run()
        assert not at.exception and errors(at) == [], (name, errors(at))
        prompt = at.sidebar.text_area(key="prompt").value
        answer, wrong = at.text_input(key="answer").value, at.text_input(key="wrong_answer").value
        tok, logits = hf_logits(BUNDLED, prompt)
        (a,), (w,) = tok.encode(answer, add_special_tokens=False), tok.encode(wrong, add_special_tokens=False)
        metrics = {m.label: float(m.value) for m in at.metric}
        shown = metrics[next(k for k in metrics if k.startswith("Model's"))]
        assert shown == pytest.approx(float(logits[-1, a] - logits[-1, w]), abs=2e-3), name
