"""The Compare prompts page through streamlit.testing: both prompts from one URL, numbers and differences equal lens_core's."""

from __future__ import annotations

import torch

from app_testkit import errors, open_page, prompt_ids as ids, plotly_array, plotly_figure

PAGE = "app_pages/5_Compare_prompts.py"
A = "The cat sat on the mat. The dog"
B = "The dog sat on the mat. The cat"


def test_two_prompts_from_one_url_match_lens_core(app_settings, model):
    from lens_core.experiments.views.attention import AttentionRequest, attention_patterns
    from lens_core.experiments.views.dla import DLARequest, direct_logit_attribution
    from lens_core.experiments.views.logit_lens import LogitLensRequest, logit_lens

    at = open_page(PAGE, prompt=A, prompt_b=B, answer=" sat", wrong_answer=" the", layer="1", head="2")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.text_area(key="prompt_b").value == B
    sat, the = model.to_single_token(" sat"), model.to_single_token(" the")
    dla = {s: direct_logit_attribution(model, DLARequest(tokens=ids(model, t), answer=sat, wrong_answer=the))
           for s, t in (("A", A), ("B", B))}
    diff = torch.tensor(plotly_array(plotly_figure(at, "dla_heads_A − B")["data"][0]["z"]))
    torch.testing.assert_close(diff, (dla["A"].heads - dla["B"].heads).double(), atol=1e-5, rtol=0)
    assert diff.abs().max() > 0
    lens = {s: logit_lens(model, LogitLensRequest(tokens=ids(model, t), targets=(sat,))) for s, t in (("A", A), ("B", B))}
    traces = {tr["name"]: torch.tensor(plotly_array(tr["y"])) for tr in plotly_figure(at, "lens")["data"]}
    torch.testing.assert_close(traces["A − B"], (lens["A"].target_probs[:, -1, 0] - lens["B"].target_probs[:, -1, 0]).double(),
                               atol=1e-6, rtol=0)
    att = {s: attention_patterns(model, AttentionRequest(tokens=ids(model, t))).patterns[1, 2] for s, t in (("A", A), ("B", B))}
    shown = torch.tensor(plotly_array(plotly_figure(at, "attention_diff")["data"][0]["z"]))
    expected = (att["A"] - att["B"]).double()
    mask = torch.isfinite(shown)
    torch.testing.assert_close(shown[mask], expected[mask], atol=1e-6, rtol=0)
    assert float(at.metric[2].value) == round(dla["A"].logit_diff - dla["B"].logit_diff, 3)


def test_prompt_b_too_long_gets_a_message(app_settings):
    at = open_page(PAGE, prompt=A, prompt_b="word " * 200, answer=" sat")
    assert not at.exception
    assert errors(at)


def test_prompt_b_opens_on_a_contrast_of_a_not_on_a_copy(app_settings, model):
    prompt = "When Mary and John went to the store, John gave a drink to"
    at = open_page(PAGE, prompt=prompt, answer=" Mary")
    assert not at.exception and errors(at) == []
    b = at.text_area(key="prompt_b").value
    assert b != prompt and len(ids(model, b)) == len(ids(model, prompt))
    assert not any("every difference below is 0" in i.value for i in at.info)


def test_prompt_b_equal_to_a_says_every_difference_is_zero(app_settings):
    at = open_page(PAGE, prompt=A, prompt_b=A, answer=" sat")
    assert not at.exception
    assert any("every difference below is 0" in i.value for i in at.info)


def test_a_wait_too_short_to_notice_is_not_announced():
    from ui.model import wait_notice

    assert wait_notice(None, "cpu") is None and wait_notice(0.04, "cpu") is None
    assert wait_notice(1.25, "cpu") == "This run was queued for 1.2 s behind other runs on cpu."
