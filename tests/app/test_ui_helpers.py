"""ui helpers: settings, escaping in charts, error display, answer-token validation, the queued notice."""

from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from app_testkit import APP, plotly_figure
from tiny_model import write_settings
from ui import charts
from ui.settings import SettingsError, load_settings

XSS = "<img src=x onerror=alert(1)>"


# -- settings ------------------------------------------------------------------------
def test_repository_settings_file_is_valid_and_offers_the_bundled_model_first():
    settings = load_settings()
    assert settings.default_model == "default"
    assert settings.demo_mode and not settings.arbitrary_models_allowed


def test_demo_mode_overrides_allow_arbitrary_models(tmp_path):
    demo = load_settings(write_settings(tmp_path / "a.toml", tmp_path, tmp_path, allow_arbitrary=True, demo_mode=True))
    assert not demo.arbitrary_models_allowed
    assert demo.model_allowed(str(tmp_path)) and not demo.model_allowed("gpt2")
    open_ = load_settings(write_settings(tmp_path / "b.toml", tmp_path, tmp_path, allow_arbitrary=True, demo_mode=False))
    assert open_.model_allowed("gpt2") and not open_.model_allowed("  ")


def test_settings_env_var_selects_the_file(tmp_path, monkeypatch):
    path = write_settings(tmp_path / "s.toml", tmp_path / "m", tmp_path / "c", max_prompt_tokens=17)
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    from ui.settings import get_settings

    assert get_settings().max_prompt_tokens == 17
    assert get_settings().model_allowlist == (str(tmp_path / "m"),)


@pytest.mark.parametrize("bad", ["max_prompt_tokens = 0", "max_prompt_tokens = \"many\""])
def test_bad_settings_values_are_refused(tmp_path, bad):
    path = write_settings(tmp_path / "s.toml", tmp_path, tmp_path)
    path.write_text(path.read_text().replace("max_prompt_tokens = 40", bad))
    with pytest.raises(SettingsError, match="max_prompt_tokens"):
        load_settings(path)


# -- charts --------------------------------------------------------------------------
def test_token_labels_are_escaped_and_repeated_tokens_keep_their_own_rows():
    tokens = [XSS, " the", " the"]
    fig = charts.heatmap([[0.1, 0.2, 0.3]] * 3, tokens, tokens, value_name="w")
    ticks = list(fig.layout.xaxis.ticktext)
    assert len(ticks) == 3 and ticks[1] == ticks[2] == "␣the"
    assert "<img" not in ticks[0] and "&lt;img" in ticks[0]
    hover_labels = {cell[0] for row in fig.data[0].customdata for cell in row}
    assert all("<" not in label for label in hover_labels)
    bar = charts.bar([1.0], [XSS], labels_are_tokens=True)
    assert "&lt;img" in bar.layout.xaxis.ticktext[0]


def test_attention_pattern_masks_future_positions():
    fig = charts.attention_pattern([[1.0, 0.0], [0.4, 0.6]], ["a", "b"])
    z = fig.data[0].z
    assert z[0][1] != z[0][1]  # NaN above the diagonal
    assert z[1][0] == pytest.approx(0.4)


# -- errors and inputs, through small scripts ----------------------------------------
def _guard_script():
    import streamlit as st

    from ui.errors import guard

    with guard("testing the guard"):
        raise RuntimeError("boom <b>bold</b>\nsecond line")
    st.write("after the guard")


def test_guard_shows_a_one_line_error_and_stops_the_page():
    at = AppTest.from_function(_guard_script).run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "testing the guard" in message and "RuntimeError" in message and "second line" not in message
    assert "Traceback" not in message
    assert all("after the guard" not in m.value for m in at.markdown)


def _answer_script(model_dir):
    import streamlit as st

    from lens_core import HookedTransformer
    from ui.widgets import answer_token_input

    model = HookedTransformer.from_pretrained(model_dir)
    text, token = answer_token_input("Answer", key="answer", model=model)
    st.write(f"token={token}")


def test_answer_must_be_a_single_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    single = " Mary"
    assert len(tok.encode(single, add_special_tokens=False)) == 1
    at = AppTest.from_function(_answer_script, args=(str(tiny_model_dir),), default_timeout=60)
    at.query_params["answer"] = single
    at.run()
    assert not at.exception and len(at.error) == 0
    assert f"token={tok.encode(single, add_special_tokens=False)[0]}" in at.markdown[0].value

    at.text_input(key="answer").input(" Marylandia").run()
    assert len(at.error) == 1 and "not a single token" in at.error[0].value
    assert "token=None" in at.markdown[0].value

    at.text_input(key="answer").input("").run()
    assert "empty" in at.error[0].value


def test_a_run_waiting_for_a_busy_device_is_reported_as_queued(app_settings):
    import ui.model

    app_settings()  # max_concurrent_runs_per_device = 2 in the test settings
    pool = ui.model.get_pool()
    release = threading.Event()
    holding = threading.Barrier(3)

    def hold_slot():
        with pool.run_slot("cpu"):
            holding.wait()
            release.wait(10)

    holders = [threading.Thread(target=hold_slot) for _ in range(2)]
    for t in holders:
        t.start()
    holding.wait()
    threading.Timer(1.0, release.set).start()
    start = time.monotonic()
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["prompt"] = "The cat sat"
    at.run()
    for t in holders:
        t.join()
    assert time.monotonic() - start >= 0.9
    assert not at.exception
    assert any("queued" in c.value for c in at.caption), [c.value for c in at.caption]
    assert plotly_figure(at, "loss_chart")["data"]


def _oom_script(model_dir):
    import streamlit as st

    from lens_core import HookedTransformer
    from lens_core.experiments.views.predictions import PredictionsRequest, predictions
    from ui.errors import guard
    from ui.model import run_experiment

    model = HookedTransformer.from_pretrained(model_dir)
    tokens = model.to_tokens("The cat sat")

    def out_of_memory(model, request):
        raise RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB")

    request = PredictionsRequest(tokens=tuple(tokens[0].tolist()), top_k=1)
    with guard("the first run", stop=False):
        run_experiment(model, "predictions_oom", out_of_memory, request)
    with guard("the second run"):
        result = run_experiment(model, "predictions", predictions, request)
    st.write(f"second run ok: {len(result.str_tokens)} tokens")


def test_out_of_memory_is_reported_to_the_user_and_the_next_run_works(app_settings, tiny_model_dir):
    app_settings()
    at = AppTest.from_function(_oom_script, args=(str(tiny_model_dir),), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "ran out of memory" in at.error[0].value
    assert "Traceback" not in at.error[0].value and "80.00 GiB" not in at.error[0].value
    from transformers import AutoTokenizer

    n_tokens = 1 + len(AutoTokenizer.from_pretrained(tiny_model_dir).encode("The cat sat", add_special_tokens=False))
    assert any(f"second run ok: {n_tokens} tokens" in m.value for m in at.markdown), [m.value for m in at.markdown]


def test_copied_snippets_run_and_reproduce_what_the_page_drew(app_settings, tiny_model_dir):
    """Every "Copy as Python" block of the DLA and ablation pages runs as is; DLA's gives the drawn numbers."""
    import contextlib
    import io

    import numpy as np

    from app_testkit import open_page, plotly_array

    app_settings()
    prompt = "The cat sat on the mat. The dog"
    for page, query in (("app_pages/4_Direct_logit_attribution.py", {"answer": " the", "wrong_answer": " a"}),
                        ("app_pages/8_Ablation.py", {"answer": " the", "wrong_answer": " a", "ablate": "L1H0", "abl_sweep": "true"})):
        at = open_page(page, prompt=prompt, **query)
        assert not at.exception and len(at.code) >= 2, page
        for block in at.code:
            namespace: dict = {}
            with contextlib.redirect_stdout(io.StringIO()):
                exec(block.value, namespace)  # noqa: S102 - our own generated code: running it is the test
            assert namespace["model"].cfg.model_name == str(tiny_model_dir)
            if namespace["result"].kind == "dla":
                drawn = plotly_array(plotly_figure(at, "dla_heads")["data"][0]["z"])
                assert np.allclose(drawn, namespace["result"].heads.numpy(), atol=1e-6)


def test_two_lines_differ_in_colour_dash_and_marker():
    from ui import charts

    fig = charts.lines({"before": [1.0, 2.0], "after ablation": [1.1, 2.1]}, ["a", "b"])
    before, after = fig.data
    assert before.line.color != after.line.color and before.line.dash != after.line.dash
    assert before.marker.symbol != after.marker.symbol


def test_corpus_errors_reach_the_page_as_their_own_words():
    from lens_core.corpus import CorpusError
    from ui.errors import message_for

    assert message_for(CorpusError("The corpus has no text to rank."), "browsing") == "The corpus has no text to rank."


def test_dictionary_errors_reach_the_page_as_their_own_words():
    from lens_core.features import FeaturesUnavailable
    from ui.errors import message_for

    text = "attribution graphs with skip transcoders are not supported yet (layers [1])"
    assert message_for(FeaturesUnavailable(text), "building the graph") == text
