"""The app through streamlit.testing: pages render, charts match a transformers reference, bad inputs are caught."""

from __future__ import annotations

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import APP, plotly_array, plotly_figure

PROMPT = "The cat sat on the mat. The dog"
PAGES = ["app_pages/1_Prompt_and_predictions.py", "app_pages/2_Attention.py"]
MAIN_CHART = {"app_pages/1_Prompt_and_predictions.py": "loss_chart", "app_pages/2_Attention.py": "pattern_chart"}


def run_app(page: str | None = None, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None and page != PAGES[0]:
        at.switch_page(page)
        at.run()
    return at


def hf_reference(model_dir, prompt):
    """Logits and attention of the same checkpoint run by transformers (eager attention)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True)
    return tok, ids, out


def error_texts(at) -> list[str]:
    return [e.value for e in at.error] + [e.value for e in at.sidebar.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception_and_draws_its_main_chart(app_settings, page):
    at = run_app(page, prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    assert error_texts(at) == []
    figure = plotly_figure(at, MAIN_CHART[page])
    assert figure["data"], "main chart has no traces"


def test_predictions_page_matches_transformers(app_settings, tiny_model_dir):
    at = run_app(prompt=PROMPT, top_k="3")
    tok, ids, out = hf_reference(tiny_model_dir, PROMPT)
    table = at.dataframe[0].value
    assert list(table["token id"]) == ids

    log_probs = out.logits[0].log_softmax(-1)
    ref_loss = -log_probs[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    shown_loss = torch.tensor(table["loss on next token"].iloc[:-1].astype(float).to_numpy())
    torch.testing.assert_close(shown_loss, ref_loss.double(), atol=1e-4, rtol=1e-4)

    ref_p, ref_ids = log_probs.exp().topk(3, dim=-1)
    torch.testing.assert_close(torch.tensor(table[["p1", "p2", "p3"]].to_numpy(dtype=float)), ref_p.double(), atol=1e-5, rtol=1e-4)
    # The predicted tokens' strings (whitespace made visible) match the reference's top-1 at each position.
    top1 = [tok.decode([i]).replace(" ", "␣").replace("\n", "↵") for i in ref_ids[:, 0].tolist()]
    assert list(table["top 1"]) == top1

    # The loss chart carries the same numbers.
    fig = plotly_figure(at, "loss_chart")
    torch.testing.assert_close(torch.tensor(plotly_array(fig["data"][0]["y"])), ref_loss.double(), atol=1e-4, rtol=1e-4)


def test_attention_page_restores_layer_and_head_from_url_and_matches_transformers(app_settings, tiny_model_dir):
    at = run_app("app_pages/2_Attention.py", prompt=PROMPT, layer="1", head="2")
    assert not at.exception
    assert at.slider(key="layer").value == 1 and at.slider(key="head").value == 2
    assert at.sidebar.text_area(key="prompt").value == PROMPT

    _, ids, out = hf_reference(tiny_model_dir, PROMPT)
    fig = plotly_figure(at, "pattern_chart")
    shown = torch.tensor(plotly_array(fig["data"][0]["z"]))
    ref = out.attentions[1][0, 2].double()
    causal = torch.tril(torch.ones_like(ref, dtype=torch.bool))
    torch.testing.assert_close(shown[causal], ref[causal], atol=1e-5, rtol=1e-4)
    assert torch.isnan(shown[~causal]).all()
    assert "L1H2" in fig["layout"]["title"]["text"]
    assert len(fig["layout"]["xaxis"]["ticktext"]) == len(ids)


def test_widget_changes_are_written_to_the_url(app_settings):
    at = run_app("app_pages/2_Attention.py", prompt=PROMPT)
    at.slider(key="head").set_value(3).run()
    at.sidebar.text_area(key="prompt").input("one two three").run()
    assert at.query_params["head"] in ("3", ["3"])
    assert at.query_params["prompt"] in ("one two three", ["one two three"])


def test_url_values_out_of_range_use_the_nearest_valid_value_and_say_so(app_settings):
    at = run_app("app_pages/2_Attention.py", prompt=PROMPT, layer="99", head="banana")
    assert not at.exception
    assert at.slider(key="layer").value == 1 and at.slider(key="head").value == 0
    warnings = [w.value.replace("\\", "") for w in at.warning]
    assert any("layer=99 was ignored" in w for w in warnings) and any("head=banana was ignored" in w for w in warnings)


def test_empty_prompt_shows_message_next_to_the_input(app_settings):
    at = run_app(prompt="   ")
    assert not at.exception
    assert any("prompt" in e.value.lower() and "empty" in e.value.lower() for e in at.sidebar.error)
    assert at.get("plotly_chart") == [] or len(at.get("plotly_chart")) == 0


def test_prompt_over_the_token_cap_shows_the_cap(app_settings):
    app_settings(max_prompt_tokens=8)
    at = run_app(prompt="one two three four five six seven eight nine ten")
    assert not at.exception
    messages = [e.value for e in at.sidebar.error]
    assert any("limit is 8" in m for m in messages), messages
    assert len(at.get("plotly_chart")) == 0


def test_model_not_in_allowlist_is_refused_in_demo_mode(app_settings, tiny_model_dir):
    at = run_app(model="/etc", prompt=PROMPT)
    assert not at.exception
    assert any("does not allow" in w.value for w in at.sidebar.warning)
    assert at.sidebar.selectbox(key="model").value == str(tiny_model_dir)  # fell back to the allowlisted model


def test_model_that_fails_to_load_shows_a_message_and_the_page_keeps_serving(app_settings, tmp_path):
    app_settings(allow_arbitrary=True, demo_mode=False)
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    at = run_app(model=str(broken), prompt=PROMPT)
    assert not at.exception
    assert any("Could not load" in e.value for e in at.sidebar.error), error_texts(at)
    assert at.sidebar.text_input(key="custom_model").value == str(broken)
    # Clearing the free-text model goes back to the allowlisted one, which works.
    at.sidebar.text_input(key="custom_model").input("").run()
    assert not at.exception and error_texts(at) == []
    assert len(at.get("plotly_chart")) >= 1


def test_a_view_warmed_by_the_cache_cli_is_a_hit_for_the_page(app_settings, tiny_model_dir, tmp_path):
    """``python -m cache_store warm`` and the pages key results the same way."""
    from cache_store import ResultStore
    from cache_store.warm import warm
    from lens_core import HookedTransformer

    app_settings()  # the cache lives in tmp_path / "cache"
    model = HookedTransformer.from_pretrained(str(tiny_model_dir), dtype="float32", device="cpu")
    with ResultStore(tmp_path / "cache", 2**26) as store:
        warm(store, model, [PROMPT], ["predictions", "attention_patterns"], say=lambda message: None)
        before = store.stats()
    assert before.entries == 2
    for page in PAGES:
        assert not run_app(page, prompt=PROMPT).exception
    with ResultStore(tmp_path / "cache", 2**26) as store:
        after = store.stats()
    assert after.entries == 2 and after.misses == before.misses and after.hits >= before.hits + 2
