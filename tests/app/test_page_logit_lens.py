"""Logit lens page: renders, numbers match transformers and the experiment, URL state, bad inputs, presets."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import (REPO_ROOT, assert_message_and_no_chart, errors, hf_logits, one_line_guesses, open_page, plotly_array,
                         plotly_figure)

PAGE = "app_pages/3_Logit_lens.py"
PROMPT = "The cat sat on the mat. The dog"


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def hf_probs(model_dir, prompt):
    tok, logits = hf_logits(model_dir, prompt)
    return tok, logits.softmax(-1)  # [pos, vocab]


def test_page_renders_with_a_predicted_default_target(app_settings, tiny_model_dir):
    at = run_page(prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    fig = plotly_figure(at, "logit_lens_chart")
    assert fig["data"][0]["type"] == "heatmap"
    # The default target is the model's own top prediction after the prompt (from transformers).
    tok, probs = hf_probs(tiny_model_dir, PROMPT)
    target = at.text_input(key="answer").value
    assert tok.encode(target, add_special_tokens=False) == one_line_guesses(tok, probs[-1], 1)


def test_heatmap_is_the_target_probability_and_its_last_row_is_the_models_output(app_settings, tiny_model_dir):
    at = run_page(prompt=PROMPT, answer=" sat", top_k="3", ln_mode="recomputed")
    assert not at.exception and errors(at) == []
    z = torch.tensor(plotly_array(plotly_figure(at, "logit_lens_chart")["data"][0]["z"]))
    tok, probs = hf_probs(tiny_model_dir, PROMPT)
    (sat,) = tok.encode(" sat", add_special_tokens=False)
    assert z.shape == (3, probs.shape[0])  # two layers + final, every position
    torch.testing.assert_close(z[-1], probs[:, sat], atol=1e-5, rtol=1e-4)

    from lens_core import HookedTransformer
    from lens_core.experiments.views.logit_lens import LogitLensRequest, logit_lens

    model = HookedTransformer.from_pretrained(str(tiny_model_dir))
    for mode in ("recomputed", "frozen"):
        at.radio(key="ln_mode").set_value(mode).run()
        z = torch.tensor(plotly_array(plotly_figure(at, "logit_lens_chart")["data"][0]["z"]))
        ref = logit_lens(model, LogitLensRequest(prompt=PROMPT, targets=(" sat",), ln_mode=mode)).target_probs[..., 0]
        torch.testing.assert_close(z, ref.double(), atol=1e-6, rtol=1e-5)
    # Hover names the top tokens of the cell, escaped.
    custom = plotly_figure(at, "logit_lens_chart")["data"][0]["customdata"]
    assert "top:" in custom[0][0][2]


def test_rank_view_matches_ranks_from_the_full_distribution(app_settings, tiny_model_dir):
    k = 4
    at = run_page(prompt=PROMPT, answer=" the", lens_value="rank", top_k=str(k))
    assert not at.exception and errors(at) == []
    z = torch.tensor(plotly_array(plotly_figure(at, "logit_lens_chart")["data"][0]["z"]))
    tok, probs = hf_probs(tiny_model_dir, PROMPT)
    (the,) = tok.encode(" the", add_special_tokens=False)
    rank = 1 + (probs > probs[:, the : the + 1]).sum(-1)
    expected = torch.where(rank <= k, rank, torch.full_like(rank, k + 1)).double()
    assert torch.equal(z[-1], expected)


def test_url_restores_every_input(app_settings):
    at = run_page(prompt=PROMPT, answer=" sat", lens_value="rank", ln_mode="frozen", top_k="7")
    assert not at.exception
    assert at.sidebar.text_area(key="prompt").value == PROMPT
    assert at.text_input(key="answer").value == " sat"
    assert at.radio(key="lens_value").value == "rank"
    assert at.radio(key="ln_mode").value == "frozen"
    assert at.slider(key="top_k").value == 7
    at.radio(key="lens_value").set_value("probability").run()
    assert at.query_params["lens_value"] in ("probability", ["probability"])


@pytest.mark.parametrize(("answer", "message"), [("", "empty"), (" cat sat on", "not a single token")])
def test_bad_target_shows_its_message_and_no_chart(app_settings, answer, message):
    at = run_page(prompt=PROMPT, answer=answer)
    assert not at.exception
    assert any(message in m for m in errors(at)), errors(at)
    assert len(at.get("plotly_chart")) == 0


def test_empty_prompt_shows_its_message(app_settings):
    at = run_page(prompt="  ", answer=" cat")
    assert_message_and_no_chart(at, "empty", in_sidebar=True)


def test_no_gpt2_presets_for_a_model_that_is_not_gpt2(app_settings):
    at = run_page(prompt=PROMPT)
    assert [b for b in at.button if (b.key or "").startswith("preset_")] == []


def test_each_gpt2_preset_runs(gpt2_named_settings):
    at = run_page(prompt=PROMPT)
    names = [b.label for b in at.button if (b.key or "").startswith("preset_")]
    assert names == ["IOI", "Eiffel Tower"]
    next(b for b in at.button if b.label == "IOI").click().run()
    assert not at.exception and errors(at) == [], errors(at)
    assert at.sidebar.text_area(key="prompt").value.startswith("When John and Mary")
    assert at.text_input(key="answer").value == " John"
    assert len(at.get("plotly_chart")) == 1
    # " Paris" is three tokens for this tiny tokenizer (one for GPT-2's): the preset runs and says so.
    next(b for b in at.button if b.label == "Eiffel Tower").click().run()
    assert not at.exception
    assert any("' Paris' is not a single token" in m.replace("\\", "") for m in errors(at)), errors(at)


BUNDLED = REPO_ROOT / "lens_core" / "default_model"


@pytest.mark.skipif(not (BUNDLED / "presets.json").exists(), reason="the bundled model's presets.json is not committed yet")
def test_bundled_presets_final_row_is_the_models_probability(bundled_settings):
    at = run_page()
    for name in [b.label for b in at.button if (b.key or "").startswith("preset_")]:
        next(b for b in at.button if b.label == name).click().run()
        assert not at.exception and errors(at) == [], (name, errors(at))
        prompt, answer = at.sidebar.text_area(key="prompt").value, at.text_input(key="answer").value
        tok, probs = hf_probs(BUNDLED, prompt)
        (answer_id,) = tok.encode(answer, add_special_tokens=False)
        z = torch.tensor(plotly_array(plotly_figure(at, "logit_lens_chart")["data"][0]["z"]))
        torch.testing.assert_close(z[-1], probs[:, answer_id], atol=1e-4, rtol=1e-3)
