"""The head-detectors page through streamlit.testing: heatmaps equal to lens_core and to a plain loop over transformers' attention."""

from __future__ import annotations

import tomllib

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import REPO_ROOT, assert_message_and_no_chart, errors, open_page, plotly_array, plotly_figure

PAGE = "app_pages/9_Head_detectors.py"
PROMPT = "one two three one two three one two"
BUNDLED = REPO_ROOT / "lens_core" / "default_model"


def run_page(**query) -> AppTest:
    return open_page(PAGE, **query)


def shown_scores(at) -> torch.Tensor:
    return torch.tensor(plotly_array(plotly_figure(at, "detector_chart")["data"][0]["z"]))


def loop_scores(attentions, tokens: torch.Tensor, detector: str, exclude_bos: bool, exclude_current: bool) -> torch.Tensor:
    """The detector's definition, one query at a time, on transformers' attention ([layer][batch, head, q, k])."""
    n_layers, (batch, n_heads, n_pos, _) = len(attentions), attentions[0].shape
    out = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            total, count = 0.0, 0
            for b in range(batch):
                toks = tokens[b].tolist()
                for q in range(n_pos):
                    allowed = [k for k in range(q + 1) if not (exclude_bos and k == 0) and not (exclude_current and k == q)]
                    if detector == "previous_token":
                        targets = [k for k in allowed if k == q - 1]
                    elif detector == "duplicate_token":
                        targets = [k for k in allowed if k < q and toks[k] == toks[q]]
                    else:
                        targets = [k for k in allowed if k >= 1 and toks[k - 1] == toks[q]]
                    if not targets:
                        continue
                    row = attentions[layer][b, head, q].double()
                    total += float(row[targets].sum() / row[allowed].sum())
                    count += 1
            out[layer, head] = total / count
    return out


def hf_attentions(model_dir, tokens: torch.Tensor):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(tokens.cpu(), output_attentions=True).attentions


@pytest.mark.parametrize(
    ("detector", "exclude_bos", "exclude_current"),
    [("previous_token", False, False), ("duplicate_token", True, True), ("induction", True, False)],
)
def test_prompt_scores_from_url_match_a_plain_loop_over_transformers(app_settings, model, tiny_model_dir, detector,
                                                                     exclude_bos, exclude_current):
    at = run_page(prompt=PROMPT, det_source="prompt", detector=detector, exclude_bos=str(int(exclude_bos)),
                  exclude_current=str(int(exclude_current)))
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    assert at.radio(key="detector").value == detector
    assert at.checkbox(key="exclude_bos").value is exclude_bos
    assert at.checkbox(key="exclude_current").value is exclude_current

    tokens = model.to_tokens(PROMPT)
    expected = loop_scores(hf_attentions(tiny_model_dir, tokens), tokens, detector, exclude_bos, exclude_current)
    torch.testing.assert_close(shown_scores(at), expected, atol=1e-5, rtol=1e-4)


def test_repeated_random_tokens_from_url_match_lens_core_and_a_plain_loop(app_settings, model, tiny_model_dir):
    at = run_page(prompt=PROMPT, det_source="random", seq_len="7", det_batch="2", seed="3", detector="induction")
    assert not at.exception and errors(at) == []
    assert at.number_input(key="seq_len").value == 7 and at.number_input(key="det_batch").value == 2
    assert at.number_input(key="seed").value == 3

    from lens_core.experiments.views.detectors import DetectorRequest, head_detectors, repeated_random_tokens

    expected = head_detectors(model, DetectorRequest(seq_len=7, batch=2, seed=3))
    torch.testing.assert_close(shown_scores(at), expected.induction.double(), atol=1e-6, rtol=1e-5)
    tokens = repeated_random_tokens(model, 7, 2, 3)
    assert tokens.shape == (2, 15) and torch.equal(tokens[:, 1:8], tokens[:, 8:])
    reference = loop_scores(hf_attentions(tiny_model_dir, tokens), tokens, "induction", True, False)
    torch.testing.assert_close(shown_scores(at), reference, atol=1e-5, rtol=1e-4)


def test_arena_preset_switches_to_repeated_random_tokens(app_settings, model):
    at = run_page(prompt=PROMPT, detector="previous_token")
    assert not at.exception and errors(at) == []
    at.button(key="preset_detectors_page_0").click().run()
    assert not at.exception and errors(at) == []
    assert at.radio(key="det_source").value == "random" and at.radio(key="detector").value == "induction"
    seq_len = (40 - 1) // 2  # the test settings cap prompts at 40 tokens
    assert at.number_input(key="seq_len").value == seq_len
    assert at.query_params["det_source"] in ("random", ["random"])

    from lens_core.experiments.views.detectors import DetectorRequest, head_detectors

    expected = head_detectors(model, DetectorRequest(seq_len=seq_len, batch=4, seed=0))
    torch.testing.assert_close(shown_scores(at), expected.induction.double(), atol=1e-6, rtol=1e-5)


def test_too_short_a_context_for_repeated_tokens_shows_a_message(app_settings):
    app_settings(max_prompt_tokens=4)
    at = run_page(prompt="one two", det_source="random")
    assert not at.exception
    assert any("too short for repeated random tokens" in e.value for e in at.error), errors(at)
    assert len(at.get("plotly_chart")) == 0


def test_out_of_range_sequence_length_in_a_link_is_named_and_falls_back(app_settings):
    at = run_page(prompt=PROMPT, det_source="random", seq_len="500", det_batch="0")
    assert not at.exception and errors(at) == []
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert any("seq_len=500 was ignored" in w and "2–19" in w for w in warnings), warnings
    assert any("det_batch=0 was ignored" in w and "1–16" in w for w in warnings), warnings
    # the nearest valid values
    assert at.number_input(key="seq_len").value == 19 and at.number_input(key="det_batch").value == 1
    plotly_figure(at, "detector_chart")


def test_prompt_source_with_an_empty_prompt_shows_the_sidebar_message(app_settings):
    at = run_page(prompt="  ", det_source="prompt")
    assert_message_and_no_chart(at, "empty", in_sidebar=True)


def test_changed_inputs_are_written_to_the_url(app_settings):
    at = run_page(prompt=PROMPT)
    at.radio(key="detector").set_value("duplicate_token").run()
    at.checkbox(key="exclude_bos").uncheck().run()
    assert not at.exception
    assert at.query_params["detector"] in ("duplicate_token", ["duplicate_token"])
    assert at.query_params["exclude_bos"] in ("0", ["0"])


@pytest.mark.skipif(not ((BUNDLED / "config.json").exists() and any(BUNDLED.glob("*.safetensors"))),
                    reason="the bundled default model is not in lens_core/default_model/ yet")
def test_arena_preset_lights_up_induction_heads_in_a_later_layer_of_the_bundled_model(bundled_settings):
    at = run_page()
    at.button(key="preset_detectors_page_0").click().run()
    assert not at.exception and errors(at) == []
    scores = shown_scores(at)
    from lens_core import HookedTransformer
    from lens_core.experiments.views.detectors import DetectorRequest, head_detectors

    bundled = HookedTransformer.from_pretrained("default")
    cap = tomllib.loads(bundled_settings.read_text(encoding="utf-8"))["limits"]["max_prompt_tokens"]
    seq_len = min(50, (min(bundled.cfg.n_ctx, cap) - 1) // 2)
    assert at.number_input(key="seq_len").value == seq_len
    expected = head_detectors(bundled, DetectorRequest(seq_len=seq_len, batch=4, seed=0))
    torch.testing.assert_close(scores, expected.induction.double(), atol=1e-6, rtol=1e-5)
    # Induction needs a previous-token head before it: the brightest head is in a later layer, far above layer 0's.
    best_layer = int(scores.flatten().nan_to_num(-1).argmax()) // scores.shape[1]
    assert best_layer >= 1, scores
    assert float(scores.nan_to_num(-1).max()) >= 5 * float(scores[0].max()), scores
