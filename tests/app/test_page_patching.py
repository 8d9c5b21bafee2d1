"""Activation patching page: renders, numbers match transformers and the experiment, URL state, bad inputs, presets."""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import REPO_ROOT, assert_message_and_no_chart, errors, open_page, plotly_array, plotly_figure

PAGE = "app_pages/6_Activation_patching.py"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
BUNDLED = REPO_ROOT / "lens_core" / "default_model"


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def z_of(at, key):
    return torch.tensor(plotly_array(plotly_figure(at, key)["data"][0]["z"]))


class HF:
    """The same checkpoint in transformers: the metric for any token sequence."""

    def __init__(self, model_dir):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def ids(self, text):
        return [self.tok.bos_token_id] + self.tok.encode(text, add_special_tokens=False)

    def one(self, text):
        (i,) = self.tok.encode(text, add_special_tokens=False)
        return i

    def logit_diff(self, ids, answer, wrong):
        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0, -1].double()
        return float(logits[self.one(answer)] - logits[self.one(wrong)])


def test_page_renders_with_a_derived_corrupted_prompt(app_settings, tiny_model_dir):
    at = run_page(prompt=CLEAN)
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    for key in ("patching_resid_pre", "patching_head_out_all_pos"):
        assert plotly_figure(at, key)["data"][0]["type"] == "heatmap"
    hf = HF(tiny_model_dir)
    corrupted = at.text_input(key="corrupted").value
    clean_ids, corrupted_ids = hf.ids(CLEAN), hf.ids(corrupted)
    assert len(corrupted_ids) == len(clean_ids)
    assert sum(a != b for a, b in zip(clean_ids, corrupted_ids)) == 1  # one token changed
    labels = [m.label for m in at.metric]
    assert any(label.startswith("Clean") for label in labels) and any(label.startswith("Corrupted") for label in labels)


def test_heatmaps_and_baselines_match_transformers_and_the_experiment(app_settings, tiny_model_dir):
    at = run_page(prompt=CLEAN, corrupted=CORRUPTED, answer=" John", wrong_answer=" Mary",
                  sweeps="resid_pre,head_out_all_pos,head_out_by_pos", patch_value="logit difference")
    assert not at.exception and errors(at) == []
    hf = HF(tiny_model_dir)
    clean_ids, corrupted_ids = hf.ids(CLEAN), hf.ids(CORRUPTED)
    metrics = {m.label: float(m.value) for m in at.metric}
    clean = metrics[next(k for k in metrics if k.startswith("Clean logit"))]
    corrupted = metrics[next(k for k in metrics if k.startswith("Corrupted logit"))]
    assert clean == pytest.approx(hf.logit_diff(clean_ids, " John", " Mary"), abs=2e-3)
    assert corrupted == pytest.approx(hf.logit_diff(corrupted_ids, " John", " Mary"), abs=2e-3)

    # Denoising resid_pre of layer 0 at position p is running the corrupted prompt with clean token p
    # (GPT-2's first residual is token embedding + position embedding).
    z = z_of(at, "patching_resid_pre")
    assert z.shape == (2, len(clean_ids))
    for p in range(len(clean_ids)):
        swapped = corrupted_ids[:p] + [clean_ids[p]] + corrupted_ids[p + 1:]
        assert float(z[0, p]) == pytest.approx(hf.logit_diff(swapped, " John", " Mary"), abs=1e-4), p

    from lens_core import HookedTransformer
    from lens_core.experiments.interventions.patching import PatchingRequest, activation_patching

    model = HookedTransformer.from_pretrained(str(tiny_model_dir))
    for sweep in ("resid_pre", "head_out_all_pos", "head_out_by_pos"):
        ref = activation_patching(model, PatchingRequest(clean_prompt=CLEAN, corrupted_prompt=CORRUPTED, answer=" John",
                                                         wrong_answer=" Mary", sweep=sweep)).logit_diff
        shown = z_of(at, f"patching_{sweep}")
        torch.testing.assert_close(shown, ref.reshape(-1, ref.shape[-1]).double(), atol=1e-5, rtol=1e-4)

    # Normalized: clean = 1, corrupted = 0, from the same cells.
    at.radio(key="patch_value").set_value("normalized").run()
    clean, corrupted = hf.logit_diff(clean_ids, " John", " Mary"), hf.logit_diff(corrupted_ids, " John", " Mary")
    torch.testing.assert_close(z_of(at, "patching_resid_pre"), (z - corrupted) / (clean - corrupted), atol=1e-3, rtol=1e-3)


def test_noise_direction_patches_corrupted_tokens_into_the_clean_run(app_settings, tiny_model_dir):
    at = run_page(prompt=CLEAN, corrupted=CORRUPTED, answer=" John", wrong_answer=" Mary", sweeps="resid_pre",
                  direction="noise", patch_value="logit difference")
    assert not at.exception and errors(at) == []
    hf = HF(tiny_model_dir)
    clean_ids, corrupted_ids = hf.ids(CLEAN), hf.ids(CORRUPTED)
    z = z_of(at, "patching_resid_pre")
    p = next(i for i, (a, b) in enumerate(zip(clean_ids, corrupted_ids)) if a != b)
    swapped = clean_ids[:p] + [corrupted_ids[p]] + clean_ids[p + 1:]
    assert float(z[0, p]) == pytest.approx(hf.logit_diff(swapped, " John", " Mary"), abs=1e-4)
    assert float(z[0, 0]) == pytest.approx(hf.logit_diff(clean_ids, " John", " Mary"), abs=1e-4)


def test_url_restores_every_input(app_settings):
    at = run_page(prompt=CLEAN, corrupted=CORRUPTED, answer=" Mary", wrong_answer=" John", sweeps="attn_out,mlp_out",
                  direction="noise", patch_value="answer probability")
    assert not at.exception
    assert at.text_input(key="corrupted").value == CORRUPTED
    assert at.text_input(key="answer").value == " Mary"
    assert at.text_input(key="wrong_answer").value == " John"
    assert at.multiselect(key="sweeps").value == ["attn_out", "mlp_out"]
    assert at.radio(key="direction").value == "noise"
    assert at.radio(key="patch_value").value == "answer probability"
    assert {c.proto.id.split("-")[-1] for c in at.get("plotly_chart")} == {"patching_attn_out", "patching_mlp_out"}
    at.multiselect(key="sweeps").select("resid_post").run()
    assert at.query_params["sweeps"] in ("attn_out,mlp_out,resid_post", ["attn_out,mlp_out,resid_post"])


def test_prompts_of_different_lengths_show_both_token_counts(app_settings, tiny_model_dir):
    at = run_page(prompt=CLEAN, corrupted="When Mary went", answer=" John", wrong_answer=" Mary")
    assert not at.exception
    hf = HF(tiny_model_dir)
    n_clean, n_corrupted = len(hf.ids(CLEAN)), len(hf.ids("When Mary went"))
    message = " ".join(errors(at))
    assert "same number of tokens" in message and f"has {n_clean}" in message and f"has {n_corrupted}" in message
    assert len(at.get("plotly_chart")) == 0


@pytest.mark.parametrize(("query", "message"), [
    ({"corrupted": " ", "answer": " John"}, "empty"),
    ({"corrupted": CORRUPTED, "answer": ""}, "empty"),
    ({"corrupted": CORRUPTED, "answer": " John Mary"}, "not a single token"),
    ({"corrupted": CORRUPTED, "answer": " John", "wrong_answer": " store"}, "not a single token"),
])
def test_bad_inputs_show_their_message_and_no_chart(app_settings, query, message):
    at = run_page(prompt=CLEAN, **query)
    assert_message_and_no_chart(at, message)


def test_no_sweep_picked_says_so(app_settings):
    at = run_page(prompt=CLEAN, corrupted=CORRUPTED, answer=" John")
    at.multiselect(key="sweeps").set_value([]).run()
    assert not at.exception
    assert any("at least one sweep" in m for m in errors(at))


def test_empty_clean_prompt_shows_its_message(app_settings):
    at = run_page(prompt="", corrupted=CORRUPTED, answer=" John")
    assert_message_and_no_chart(at, "empty", in_sidebar=True)


def test_derive_button_writes_a_same_length_corrupted_prompt(app_settings, tiny_model_dir):
    at = run_page(prompt=CLEAN, corrupted="x", answer=" John", wrong_answer=" Mary")
    at.button(key="derive_corrupted").click().run()
    assert not at.exception and errors(at) == []
    hf = HF(tiny_model_dir)
    derived = at.text_input(key="corrupted").value
    # The answer " John" appears in the prompt: its first occurrence became the wrong answer " Mary".
    assert derived == CLEAN.replace(" John", " Mary", 1)
    assert len(hf.ids(derived)) == len(hf.ids(CLEAN))
    assert at.query_params["corrupted"] in (derived, [derived])


def test_gpt2_ioi_preset_brings_its_corrupted_prompt(gpt2_named_settings):
    at = run_page(prompt=CLEAN)
    next(b for b in at.button if b.label == "IOI").click().run()
    assert not at.exception and errors(at) == [], errors(at)
    assert at.text_input(key="corrupted").value == "When John and Mary went to the store, John gave a bottle to"
    assert at.text_input(key="answer").value == " John"
    assert len(at.get("plotly_chart")) == 2


@pytest.mark.skipif(not (BUNDLED / "presets.json").exists(), reason="the bundled model's presets.json is not committed yet")
def test_bundled_presets_get_a_same_length_corrupted_prompt_and_run(bundled_settings):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BUNDLED)
    presets = {p["name"]: p for p in json.loads((BUNDLED / "presets.json").read_text(encoding="utf-8"))}
    at = run_page()
    buttons = [b.label for b in at.button if (b.key or "").startswith("preset_")]
    assert buttons, "no preset offered on the patching page"
    for name in buttons:
        next(b for b in at.button if b.label == name).click().run()
        assert not at.exception and errors(at) == [], (name, errors(at))
        clean, corrupted = at.sidebar.text_area(key="prompt").value, at.text_input(key="corrupted").value
        assert clean == presets[name]["prompt"]
        a, b = tok.encode(clean, add_special_tokens=False), tok.encode(corrupted, add_special_tokens=False)
        assert len(a) == len(b) and a != b, name
        assert len(at.get("plotly_chart")) >= 1


def test_the_progress_bar_is_fed_by_the_experiments_progress_callback(app_settings, monkeypatch):
    import lens_core.experiments.interventions.patching as patching
    import streamlit as st

    real, calls, bars = patching.activation_patching, [], []

    def recording(model, request, progress=None):
        def forward(done, total):
            calls.append((request.sweep, done, total))
            progress(done, total)

        return real(model, request, progress=forward)

    real_progress = st.progress

    def spy_progress(value, text=None):
        bar = real_progress(value, text=text)
        original = bar.progress
        bar.progress = lambda v, text=None: (bars.append((v, text)), original(v, text=text))[1]
        return bar

    monkeypatch.setattr(patching, "activation_patching", recording)
    monkeypatch.setattr(st, "progress", spy_progress)
    at = run_page(prompt=CLEAN, corrupted=CORRUPTED, answer=" John", wrong_answer=" Mary", sweeps="resid_pre,attn_out")
    assert not at.exception and errors(at) == []
    assert {c[0] for c in calls} == {"resid_pre", "attn_out"}
    for sweep in ("resid_pre", "attn_out"):
        done, total = max((d, t) for s, d, t in calls if s == sweep)
        assert done == total > 0
    # The bar moved through the cells of both sweeps and ended full.
    assert any("resid_pre:" in (text or "") and "cells" in (text or "") for _, text in bars)
    assert max(v for v, _ in bars) == 1.0 and all(0.0 <= v <= 1.0 for v, _ in bars)
