"""The shared rule for links: a value that does not parse or is not allowed is ignored, the nearest valid value is
used, and a warning under the widget names the ignored value and why (ui.state, so every page gets it)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_testkit import errors, open_page


def widgets_script():
    import streamlit as st

    from ui import state

    state.int_slider("Layer", 0, 2, key="layer", default=0)
    state.int_input("Top k", 1, 20, key="top_k", default=5)
    state.radio("Direction", ["denoise", "noise"], key="direction")
    state.selectbox("Dtype", ["float32", "bfloat16"], key="dtype")
    state.multiselect("Sweeps", ["resid_pre", "attn_out", "mlp_out"], key="sweeps", default=["resid_pre"])
    state.checkbox("Exclude BOS", key="exclude_bos", default=True)
    high = st.session_state.get("high", 2)
    state.int_slider("Position", 0, high, key="position", default=high)


def run_widgets(**query) -> AppTest:
    at = AppTest.from_function(widgets_script, default_timeout=30)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def warnings(at) -> list[str]:
    return [w.value.replace("\\", "") for w in at.warning]


def test_good_link_values_are_used_without_a_notice():
    at = run_widgets(layer="2", top_k="7", direction="noise", dtype="bfloat16", sweeps="attn_out,mlp_out", exclude_bos="0")
    assert not at.exception and warnings(at) == []
    assert at.slider(key="layer").value == 2 and at.number_input(key="top_k").value == 7
    assert at.radio(key="direction").value == "noise" and at.selectbox(key="dtype").value == "bfloat16"
    assert at.multiselect(key="sweeps").value == ["attn_out", "mlp_out"] and at.checkbox(key="exclude_bos").value is False


@pytest.mark.parametrize("key, raw, used, why", [
    ("layer", "-1", 0, "outside 0–2"),
    ("layer", "999", 2, "outside 0–2"),
    ("layer", "abc", 0, "not a whole number"),
    ("top_k", "0", 1, "outside 1–20"),
    ("top_k", "100000", 20, "outside 1–20"),
    ("direction", "sideways", "denoise", "not one of the choices (denoise, noise)"),
    ("dtype", "float64", "float32", "not one of the choices"),
    ("exclude_bos", "maybe", "on", "not on or off"),
])
def test_a_bad_link_value_uses_the_nearest_valid_value_and_names_what_was_ignored(key, raw, used, why):
    at = run_widgets(**{key: raw})
    assert not at.exception
    notices = warnings(at)
    assert len(notices) == 1, notices
    assert f"{key}={raw} was ignored" in notices[0] and why in notices[0] and f"Showing {used}" in notices[0], notices
    widget = {"layer": at.slider, "top_k": at.number_input, "direction": at.radio, "dtype": at.selectbox,
              "exclude_bos": at.checkbox}[key]
    value = {"on": True}.get(used, used)
    assert widget(key=key).value == value
    assert at.query_params[key] in (str(value) if value is not True else "1", [str(value)], ["1"])


def test_unknown_list_entries_are_dropped_and_named_and_an_all_unknown_list_gives_the_default():
    at = run_widgets(sweeps="attn_out,bogus")
    assert at.multiselect(key="sweeps").value == ["attn_out"]
    assert any("sweeps=attn_out,bogus was ignored" in w and "bogus is not among the choices" in w for w in warnings(at))
    at = run_widgets(sweeps="nope,bogus")
    assert at.multiselect(key="sweeps").value == ["resid_pre"]
    assert any("nope, bogus are not among the choices" in w for w in warnings(at)), warnings(at)


def test_the_notice_stays_while_the_substituted_value_does_and_goes_when_the_user_picks_another():
    at = run_widgets(layer="999")
    assert len(warnings(at)) == 1
    at.run()
    assert len(warnings(at)) == 1  # still showing 2 instead of 999: still said
    at.slider(key="layer").set_value(1).run()
    assert warnings(at) == []
    at.slider(key="layer").set_value(2).run()
    assert warnings(at) == []  # the user's own choice now


def test_a_session_value_that_stops_fitting_is_moved_to_the_nearest_and_said():
    at = run_widgets()
    at.slider(key="position").set_value(2).run()
    at.session_state["high"] = 1  # e.g. a shorter prompt
    at.run()
    assert at.slider(key="position").value == 1
    assert any("position=2 no longer fits" in w and "outside 0–1" in w for w in warnings(at)), warnings(at)


@pytest.mark.parametrize("page, query, key, shown", [
    ("app_pages/4_Direct_logit_attribution.py", {"position": "abc"}, "position", "not a whole number"),
    ("app_pages/4_Direct_logit_attribution.py", {"layer": "-1"}, "layer", "outside 0–1"),
    ("app_pages/6_Activation_patching.py", {"direction": "sideways"}, "direction", "not one of the choices"),
    ("app_pages/6_Activation_patching.py", {"sweeps": "resid_pre,bogus_sweep"}, "sweeps", "bogus_sweep"),
    ("app_pages/3_Logit_lens.py", {"top_k": "100000"}, "top_k", "outside 1–20"),
    ("app_pages/8_Ablation.py", {"ablate": "L9H9"}, "ablate", "L9H9 is not among the choices"),
    ("app_pages/2_Attention.py", {"head": "999"}, "head", "outside 0–3"),
])
def test_pages_name_a_bad_link_value(app_settings, page, query, key, shown):
    at = open_page(page, prompt="The cat sat on the mat. The cat", **query)
    assert not at.exception, [e.value for e in at.exception]
    notices = warnings(at)
    assert any(f"{key}=" in w and "was ignored" in w and shown in w for w in notices), notices
    assert errors(at) == []


def test_a_model_outside_the_allowlist_is_said_once(app_settings, tiny_model_dir):
    at = open_page("app_pages/2_Attention.py", model="/etc", prompt="The cat sat")
    said = [e.value for e in at.sidebar.error] + [w.value for w in at.sidebar.warning]
    assert len([m for m in said if "etc" in m]) == 1, said
