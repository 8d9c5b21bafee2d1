"""Issue 15 (app half): nothing the user asked for is quietly changed or mis-shown.

Same answer and wrong answer, a patching gap too small to normalize by, a prompt that brings its own BOS,
user text in Markdown, the multi-token answer message, the presets and the first screen.
"""

from __future__ import annotations

import json

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import APP, REPO_ROOT, errors, open_page, plotly_figure

PROMPT = "When Mary and John went to the store, John gave a drink to"
BUNDLED = REPO_ROOT / "lens_core" / "default_model"
PAIR_PAGES = ["app_pages/4_Direct_logit_attribution.py", "app_pages/6_Activation_patching.py", "app_pages/8_Ablation.py"]
needs_bundled = pytest.mark.skipif(not (BUNDLED / "config.json").exists(), reason="no bundled model")


def warnings(at) -> list[str]:
    return [w.value.replace("\\", "") for w in at.warning]


def infos(at) -> list[str]:
    return [i.value.replace("\\", "") for i in list(at.info) + list(at.sidebar.info)]




# -- the answer pair ---------------------------------------------------------------------
@pytest.mark.parametrize("page", PAIR_PAGES)
def test_answer_equal_to_wrong_answer_is_said_on_every_page_that_takes_the_pair(app_settings, page):
    at = open_page(page, prompt=PROMPT, answer=" Mary", wrong_answer=" Mary", corrupted=PROMPT.replace("John gave", "Mary gave"))
    assert not at.exception, [e.value for e in at.exception]
    assert any("same token" in w and "' Mary'" in w for w in warnings(at)), warnings(at)
    different = open_page(page, prompt=PROMPT, answer=" Mary", wrong_answer=" John")
    assert not any("same token" in w for w in warnings(different))


def test_a_multi_token_answer_is_explained_once(app_settings, model):
    at = open_page("app_pages/4_Direct_logit_attribution.py", prompt=PROMPT, answer=" Mary John", wrong_answer=" John")
    messages = [e.value.replace("\\", "") for e in at.error]
    pieces = model.to_str_tokens(" Mary John", prepend_bos=False)
    assert len(messages) == 1, messages
    message = messages[0]
    assert message.count("' Mary John'") == 1 and message.count("not") == 1, message  # said once, not twice
    assert f"it is {len(pieces)} (" in message and all(repr(p) in message for p in pieces), message


# -- Markdown escaping ---------------------------------------------------------------------
def test_user_text_in_metric_labels_and_captions_is_escaped(app_settings):
    at = open_page("app_pages/4_Direct_logit_attribution.py", prompt=PROMPT + " __init__", answer=" Mary",
                   wrong_answer=" John")
    assert not at.exception and errors(at) == []
    label = at.metric[0].proto.label
    assert "\\(" in label and "\\)" in label, label  # the answer text is escaped in the label
    caption = [c.value for c in at.caption if c.value.startswith("At position")][0]
    assert "\\_\\_init\\_\\_" in caption or "init" not in caption, caption


@needs_bundled
def test_preset_tooltips_show_the_prompt_literally(bundled_settings):
    at = open_page("app_pages/3_Logit_lens.py")
    helps = [b.proto.help for b in at.button if (b.key or "").startswith("preset_")]
    assert helps, "no preset buttons"
    presets = json.loads((BUNDLED / "presets.json").read_text())
    with_init = [p for p in presets if "__init__" in p["prompt"] and p["page"] in ("all", "logit_lens")]
    for help_text in helps:
        assert "__init__" not in help_text  # raw underscores would render `init` bold
    if with_init:
        assert any("\\_\\_init\\_\\_" in h for h in helps), helps


# -- BOS -----------------------------------------------------------------------------------
def test_a_prompt_starting_with_bos_gets_it_once_and_is_told(app_settings, model):
    text = "<|endoftext|>The cat sat"
    at = open_page("app_pages/1_Prompt_and_predictions.py", prompt=text)
    assert not at.exception and errors(at) == []
    table = at.dataframe[0].value
    bos = model.bos_token_id
    expected = [bos] + model.to_tokens("The cat sat", prepend_bos=False)[0].tolist()
    assert list(table["token id"]) == expected  # BOS once, not twice
    assert any("starts with BOS" in m and "used once" in m for m in infos(at)), infos(at)


def test_a_prompt_that_is_only_bos_runs_on_bos_alone_and_says_so(app_settings, model):
    at = open_page("app_pages/1_Prompt_and_predictions.py", prompt="<|endoftext|>")
    assert not at.exception and errors(at) == []
    assert list(at.dataframe[0].value["token id"]) == [model.bos_token_id]
    assert any("only the BOS token" in m for m in infos(at)), infos(at)


def test_an_ordinary_prompt_gets_no_bos_note(app_settings):
    at = open_page("app_pages/1_Prompt_and_predictions.py", prompt=PROMPT)
    assert not any("BOS" in m for m in infos(at)), infos(at)


# -- patching with a small clean-corrupted gap ---------------------------------------------------
ADD = 'def add(a, b):\n    """Return a plus b."""\n    return a +'


def hf_gap_and_spread(clean: str, corrupted: str, answer: str, wrong: str) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BUNDLED)
    hf = AutoModelForCausalLM.from_pretrained(BUNDLED).eval()
    a, w = tok.encode(answer, add_special_tokens=False)[0], tok.encode(wrong, add_special_tokens=False)[0]

    def last_logits(text):
        with torch.no_grad():
            return hf(torch.tensor([[tok.bos_token_id] + tok.encode(text, add_special_tokens=False)])).logits[0, -1].double()

    c, k = last_logits(clean), last_logits(corrupted)
    top = c.log_softmax(-1).topk(32).values
    return float((c[a] - c[w]) - (k[a] - k[w])), float(top[0] - top[-1])


@needs_bundled
@pytest.mark.parametrize("corrupted, small", [(ADD.replace("Return", "Returns"), True), (ADD.replace("(a, b)", "(a, a)"), False)])
def test_a_small_clean_corrupted_gap_is_warned_and_shows_the_raw_logit_difference(bundled_settings, corrupted, small):
    gap, spread = hf_gap_and_spread(ADD, corrupted, " b", " a")
    assert (abs(gap) < 0.05 * spread) == small, (gap, spread)  # the reference agrees with the case's label
    at = open_page("app_pages/6_Activation_patching.py", prompt=ADD, corrupted=corrupted, answer=" b", wrong_answer=" a",
                   sweeps="resid_pre")
    assert not at.exception and errors(at) == []
    warned = [w for w in warnings(at) if "differ by only" in w]
    title = plotly_figure(at, "patching_resid_pre")["layout"]["title"]["text"]
    if not small:
        assert warned == [] and title.endswith("normalized"), title
        return
    assert len(warned) == 1 and f"{gap:+.3f}" in warned[0] and f"{spread:.2f}" in warned[0], (warned, gap, spread)
    assert title.endswith("logit difference"), title  # the raw value by default
    assert at.radio(key="patch_value").value == "logit difference"
    at.radio(key="patch_value").set_value("normalized").run()  # the user's explicit choice is kept, still warned
    assert plotly_figure(at, "patching_resid_pre")["layout"]["title"]["text"].endswith("normalized")
    assert any("differ by only" in w for w in warnings(at))
    at.text_input(key="corrupted").set_value(ADD.replace("(a, b)", "(a, a)")).run()  # a real contrast: no warning
    assert not any("differ by only" in w for w in warnings(at))
    assert plotly_figure(at, "patching_resid_pre")["layout"]["title"]["text"].endswith("normalized")


@needs_bundled
def test_path_patching_follows_the_same_small_gap_rule(bundled_settings):
    small = ADD.replace("Return", "Returns")
    gap, spread = hf_gap_and_spread(ADD, small, " b", " a")
    at = open_page("app_pages/7_Path_patching.py", prompt=ADD, corrupted=small, answer=" b", wrong_answer=" a")
    assert not at.exception and errors(at) == []
    assert any("differ by only" in w and f"{gap:+.3f}" in w and f"{spread:.2f}" in w for w in warnings(at)), warnings(at)
    assert plotly_figure(at, "path_patching")["layout"]["title"]["text"].endswith("logit difference")
    big = open_page("app_pages/7_Path_patching.py", prompt=ADD, corrupted=ADD.replace("(a, b)", "(a, a)"),
                    answer=" b", wrong_answer=" a")
    assert not any("differ by only" in w for w in warnings(big))
    assert plotly_figure(big, "path_patching")["layout"]["title"]["text"].endswith("normalized")


# -- presets and the first screen -------------------------------------------------------------
@needs_bundled
def test_the_attention_pages_induction_preset_selects_the_detectors_induction_head(bundled_settings):
    from test_page_detectors import hf_attentions, loop_scores

    presets = json.loads((BUNDLED / "presets.json").read_text())
    preset = next(p for p in presets if "induction" in p["name"].lower())
    at = open_page("app_pages/2_Attention.py")
    button = next(b for b in at.button if (b.key or "").startswith("preset_") and b.label == preset["name"])
    button.click().run()
    assert not at.exception and errors(at) == []
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(BUNDLED)
    tokens = torch.tensor([[tok.bos_token_id] + tok.encode(preset["prompt"], add_special_tokens=False)])
    scores = loop_scores(hf_attentions(BUNDLED, tokens), tokens, "induction", exclude_bos=True, exclude_current=False)
    best = int(scores.flatten().argmax())
    layer, head = divmod(best, scores.shape[1])
    assert (layer, head) != (0, 0) and float(scores[layer, head]) > 0.5
    assert (at.slider(key="layer").value, at.slider(key="head").value) == (layer, head)
    assert plotly_figure(at, "pattern_chart")["layout"]["title"]["text"].startswith(f"L{layer}H{head}")


@needs_bundled
def test_the_first_screen_opens_on_the_bundled_models_first_preset(bundled_settings):
    at = AppTest.from_file(APP, default_timeout=300).run()
    assert not at.exception and errors(at) == []
    first = json.loads((BUNDLED / "presets.json").read_text())[0]
    assert at.sidebar.text_area(key="prompt").value == first["prompt"]
    assert "Mary" not in at.sidebar.text_area(key="prompt").value


@needs_bundled
def test_changing_the_model_switches_to_its_own_example_but_keeps_a_typed_prompt(bundled_settings, tiny_model_dir):
    from ui.widgets import DEFAULT_PROMPT

    text = bundled_settings.read_text().replace('allowlist = ["default"]', f'allowlist = ["default", {str(tiny_model_dir)!r}]')
    bundled_settings.write_text(text)
    first = json.loads((BUNDLED / "presets.json").read_text())[0]["prompt"]
    at = AppTest.from_file(APP, default_timeout=300).run()
    assert at.sidebar.text_area(key="prompt").value == first
    at.sidebar.selectbox(key="model").set_value(str(tiny_model_dir)).run()
    assert not at.exception
    assert at.sidebar.text_area(key="prompt").value == DEFAULT_PROMPT  # the tiny model has no presets of its own
    at.sidebar.text_area(key="prompt").set_value("one two three").run()
    at.sidebar.selectbox(key="model").set_value("default").run()
    assert at.sidebar.text_area(key="prompt").value == "one two three"  # typed by the user: kept


# -- the lab profile ----------------------------------------------------------------------------
def test_the_lab_profile_offers_gpt2_pythia_and_a_llama_family_model_with_free_text_models():
    import re

    from lens_core.loading import ALIASES
    from ui.settings import load_settings

    lab = load_settings(REPO_ROOT / "settings.lab.toml")
    demo = load_settings(REPO_ROOT / "settings.toml")
    names = [m.lower() for m in lab.model_allowlist]
    assert lab.model_allowlist[0] == "default"  # opens on the bundled model, no download needed
    assert any(n.startswith("gpt2") for n in names) and any("pythia" in n for n in names)
    assert any("llama" in n or "smollm" in n for n in names)
    assert lab.arbitrary_models_allowed and not lab.demo_mode
    assert demo.demo_mode and demo.model_allowlist == ("default",)
    hub_name = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
    for name in lab.model_allowlist[1:]:
        assert hub_name.match(ALIASES.get(name, name)), name  # each is a hub name (or a known alias of one)
