"""A prompt longer than the model's context: a clear message everywhere, never a silently cut prompt."""

from __future__ import annotations

import dataclasses

import pytest
from streamlit.testing.v1 import AppTest

from lens_core import PromptTooLongError

LONG = "one two three four five six seven eight nine ten " * 20  # well over the tiny model's 64 positions


def test_count_and_validation_report_the_real_length(model):
    from ui.settings import get_settings
    from ui.widgets import count_tokens, validate_prompt

    full = model.to_tokens(LONG, truncate=True)
    assert full.shape[1] == model.cfg.n_ctx == 64
    n = len(model.tokenizer.encode(LONG, add_special_tokens=False)) + 1
    assert n > 64 and count_tokens(model, LONG) == n
    settings = dataclasses.replace(get_settings(), max_prompt_tokens=1000)
    tokens, message = validate_prompt(model, LONG, settings)
    assert tokens is None and f"is {n} tokens long; the limit is 64 (the model's context length)" in message


def test_no_corrupted_prompt_is_derived_from_an_over_long_prompt(model):
    from ui.widgets import derive_corrupted_prompt

    assert derive_corrupted_prompt(model, LONG) is None


def _page_running_a_long_prompt_through_the_store(model_dir: str, cache_dir: str, prompt: str) -> None:
    import streamlit as st

    from cache_store import ResultStore
    from lens_core import HookedTransformer
    from lens_core.experiments.views.predictions import PredictionsRequest, predictions
    from ui.errors import guard

    model = HookedTransformer.from_pretrained(model_dir, dtype="float32", device="cpu")
    with guard("computing the predictions"):
        ResultStore(cache_dir).run_experiment(model, "predictions", predictions, PredictionsRequest(prompt=prompt))
    st.write("not reached")


def test_the_store_refuses_it_and_a_page_shows_the_message(tiny_model_dir, tmp_path):
    at = AppTest.from_function(_page_running_a_long_prompt_through_the_store,
                               args=(str(tiny_model_dir), str(tmp_path / "cache"), LONG), default_timeout=120)
    at.run()
    assert not at.exception
    shown = [e.value.replace("\\", "") for e in at.error]
    assert len(shown) == 1 and "tokens long, longer than the model's context of 64 tokens" in shown[0], shown
    assert "Something went wrong" not in shown[0]  # a message for the user, not an internal error
    assert not any("not reached" in m.value for m in at.markdown)


def test_the_user_facing_message_is_shown_as_is():
    from ui.errors import message_for

    error = PromptTooLongError(70, 64)
    assert message_for(error, "anything") == str(error)
    with pytest.raises(ValueError):
        raise error
