"""The ablation page through streamlit.testing: inputs from the URL, numbers equal to lens_core's, bad inputs caught."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import errors, open_page, plotly_array, plotly_figure

PAGE = "app_pages/8_Ablation.py"
PROMPT = "The cat sat on the mat. The dog"
SWAPPED = "The dog sat on the mat. The cat"  # same token count as PROMPT (checked below)


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def ids_of(model, text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in model.to_tokens(text)[0].tolist())


def test_zero_ablation_from_url_draws_lens_core_numbers_and_a_transformers_baseline(app_settings, model, tiny_model_dir):
    at = run_page(prompt=PROMPT, answer=" sat", wrong_answer=" the", ablate="L1H2,L0 mlp", abl_method="zero")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    # The URL's inputs are the widgets' values.
    assert at.multiselect(key="ablate").value == ["L1H2", "L0 mlp"]
    assert at.radio(key="abl_method").value == "zero"
    assert at.text_input(key="answer").value == " sat" and at.text_input(key="wrong_answer").value == " the"

    from lens_core.experiments.interventions.ablation import AblationRequest, ablation

    expected = ablation(model, AblationRequest(prompt=PROMPT, components=(("head", 1, 2), ("mlp", 0)), method="zero",
                                               answer=" sat", wrong_answer=" the"))
    fig = plotly_figure(at, "loss_chart")
    before, after = (torch.tensor(plotly_array(trace["y"])) for trace in fig["data"])
    torch.testing.assert_close(before, expected.loss_per_token.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, expected.ablated_loss_per_token.double(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, after)  # the ablation changed something
    shown_metric = float(at.metric[0].value)
    assert shown_metric == pytest.approx(expected.ablated_metric, abs=1e-3)
    assert f"was {expected.metric:.3f}" in at.metric[0].proto.delta

    # The unablated numbers also agree with transformers on the same checkpoint.
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([ids_of(model, PROMPT)])
    with torch.no_grad():
        logits = hf(ids).logits[0]
    ref_loss = -logits[:-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    torch.testing.assert_close(before, ref_loss.double(), atol=1e-4, rtol=1e-4)
    sat, the = model.to_single_token(" sat"), model.to_single_token(" the")
    assert f"was {float(logits[-1, sat] - logits[-1, the]):.3f}" in at.metric[0].proto.delta


def test_mean_per_position_and_head_sweep_from_url_match_lens_core(app_settings, model):
    assert len(ids_of(model, SWAPPED)) == len(ids_of(model, PROMPT))
    at = run_page(prompt=PROMPT, answer=" sat", wrong_answer=" the", ablate="L0H1", abl_method="mean",
                  mean_over="prompts", refs=SWAPPED, abl_sweep="1", sweep_target="heads")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.radio(key="mean_over").value == "prompts"
    assert at.text_area(key="refs").value == SWAPPED
    assert at.checkbox(key="abl_sweep").value is True

    from lens_core.experiments.interventions.ablation import AblationRequest, AblationSweepRequest, ablation, ablation_sweep

    refs = (ids_of(model, SWAPPED),)
    expected = ablation(model, AblationRequest(prompt=PROMPT, components=(("head", 0, 1),), method="mean",
                                               mean_over="prompts", reference_tokens=refs, answer=" sat", wrong_answer=" the"))
    after = torch.tensor(plotly_array(plotly_figure(at, "loss_chart")["data"][1]["y"]))
    torch.testing.assert_close(after, expected.ablated_loss_per_token.double(), atol=1e-5, rtol=1e-5)

    sweep = ablation_sweep(model, AblationSweepRequest(prompt=PROMPT, target="heads", method="mean", mean_over="prompts",
                                                       reference_tokens=refs, answer=" sat", wrong_answer=" the"))
    shown = torch.tensor(plotly_array(plotly_figure(at, "sweep_metric_chart")["data"][0]["z"]))
    assert shown.shape == (2, 4)
    torch.testing.assert_close(shown, sweep.metric_change.double(), atol=1e-4, rtol=1e-4)
    shown_loss = torch.tensor(plotly_array(plotly_figure(at, "sweep_loss_chart")["data"][0]["z"]))
    torch.testing.assert_close(shown_loss, sweep.loss_change.double(), atol=1e-4, rtol=1e-4)
    # The sweep's cell for L0H1 is the single ablation above.
    assert float(sweep.metric[0, 1]) == pytest.approx(expected.ablated_metric, abs=1e-4)


def test_sweep_over_mlps_draws_one_bar_per_layer(app_settings, model):
    at = run_page(prompt=PROMPT, answer=" sat", wrong_answer="", ablate="", abl_sweep="1", sweep_target="mlp")
    assert not at.exception and errors(at) == []
    assert any("at least one component" in i.value for i in at.info)

    from lens_core.experiments.interventions.ablation import AblationSweepRequest, ablation_sweep

    sweep = ablation_sweep(model, AblationSweepRequest(prompt=PROMPT, target="mlp", answer=" sat"))
    bars = torch.tensor(plotly_array(plotly_figure(at, "sweep_metric_chart")["data"][0]["y"]))
    torch.testing.assert_close(bars, sweep.metric_change.double(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"abl_method": "resample", "refs": ""}, "Enter at least one reference prompt"),
        ({"abl_method": "mean", "mean_over": "prompts", "refs": "one two"}, "needs the prompt's length"),
        ({"abl_method": "mean", "mean_over": "positions", "refs": "one\n" + "one two three " * 20}, "Reference prompt 2"),
        ({"answer": " dog"}, "not a single token"),
        ({"answer": ""}, "Enter an answer token"),
    ],
)
def test_bad_inputs_show_their_message_and_no_chart(app_settings, query, message):
    base = {"prompt": PROMPT, "answer": " sat", "wrong_answer": " the", "ablate": "L0H0"}
    at = run_page(**{**base, **query})
    assert not at.exception
    assert any(message in e.value.replace("\\", "") for e in at.error), errors(at)
    assert len(at.get("plotly_chart")) == 0


def test_page_presets_set_the_inputs_and_run(app_settings):
    at = run_page(prompt=PROMPT, answer=" sat", wrong_answer=" the")
    at.button(key="preset_ablation_page_0").click().run()
    assert not at.exception and errors(at) == []
    assert at.multiselect(key="ablate").value == ["L1H0", "L1H1", "L1H2", "L1H3"]
    assert at.query_params["ablate"] in ("L1H0,L1H1,L1H2,L1H3", ["L1H0,L1H1,L1H2,L1H3"])
    plotly_figure(at, "loss_chart")
    at.button(key="preset_ablation_page_1").click().run()
    assert not at.exception and errors(at) == []
    assert at.radio(key="abl_method").value == "mean" and at.checkbox(key="abl_sweep").value
    plotly_figure(at, "sweep_metric_chart")


def test_changed_inputs_are_written_to_the_url(app_settings):
    at = run_page(prompt=PROMPT, answer=" sat", wrong_answer=" the", ablate="L0H0")
    at.radio(key="abl_method").set_value("mean").run()
    at.multiselect(key="ablate").select("L1 attn").run()
    assert not at.exception
    assert at.query_params["abl_method"] in ("mean", ["mean"])
    assert at.query_params["ablate"] in ("L0H0,L1 attn", ["L0H0,L1 attn"])
