"""The Path patching page through streamlit.testing: URL state in, lens_core.path_patching's numbers out."""

from __future__ import annotations

import pytest
import torch

from app_testkit import errors, open_page, prompt_ids as ids, plotly_array, plotly_figure

PAGE = "app_pages/7_Path_patching.py"
CLEAN = "The cat sat on the mat. The dog"
CORRUPTED = "The dog sat on the mat. The cat"


def test_sweep_into_head_queries_matches_lens_core(app_settings, model):
    from lens_core.experiments.interventions.path_patching import PathPatchingRequest, path_patching

    at = open_page(PAGE, prompt=CLEAN, corrupted=CORRUPTED, answer=" sat", wrong_answer=" the", sender_mode="sweep",
                   receiver_mode="heads", receivers="L1H2", recv_inputs="q,v", direction="denoise",
                   patch_value="logit difference")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.multiselect(key="receivers").value == ["L1H2"] and at.multiselect(key="recv_inputs").value == ["q", "v"]
    expected = path_patching(model, PathPatchingRequest(
        clean_tokens=ids(model, CLEAN), corrupted_tokens=ids(model, CORRUPTED), answer=" sat", wrong_answer=" the",
        receivers=((1, 2, "q"), (1, 2, "v")), direction="denoise"))
    z = torch.tensor(plotly_array(plotly_figure(at, "path_patching")["data"][0]["z"]))
    assert z.shape == expected.logit_diff.shape
    torch.testing.assert_close(z, expected.logit_diff.double(), atol=1e-5, rtol=0, equal_nan=True)
    assert torch.isnan(z[1:]).all() and torch.isfinite(z[0]).all()
    assert not torch.allclose(z[0], torch.full_like(z[0], expected.corrupted_logit_diff))  # something moved


def test_chosen_senders_into_final_residual(app_settings, model):
    from lens_core.experiments.interventions.path_patching import PathPatchingRequest, path_patching

    at = open_page(PAGE, prompt=CLEAN, corrupted=CORRUPTED, answer=" sat", wrong_answer=" the", sender_mode="chosen", senders="L0H1,L1H3",
                   receiver_mode="resid_final", direction="noise", patch_value="normalized")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    expected = path_patching(model, PathPatchingRequest(
        clean_tokens=ids(model, CLEAN), corrupted_tokens=ids(model, CORRUPTED), answer=" sat", wrong_answer=" the",
        senders=((0, 1), (1, 3)), direction="noise"))
    shown = [m for m in at.metric if m.label.startswith("L0H1+L1H3")]
    assert shown and float(shown[0].value) == pytest.approx(float(expected.normalized[0]), abs=1e-4)


def test_unequal_lengths_get_a_message(app_settings):
    at = open_page(PAGE, prompt=CLEAN, corrupted="The dog", answer=" sat")
    assert not at.exception
    assert any("same number of tokens" in e for e in errors(at))
