"""The guided story page end to end on the bundled model: every step drawn, its sentences naming what an independent
computation finds (loss from transformers, detector heads from a plain loop over transformers' attention)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app_testkit import APP, REPO_ROOT, errors, open_link
from test_page_detectors import hf_attentions, loop_scores
from ui import links, story

BUNDLED = REPO_ROOT / "lens_core" / "default_model"
pytestmark = pytest.mark.skipif(not (BUNDLED / "model.safetensors").exists(), reason="no bundled model")


def test_repeated_positions_by_hand():
    # BOS a b c a b: predicting b after the second a (position 4) copies; nothing else does
    assert story.repeated_positions([0, 1, 2, 3, 1, 2]) == [False, False, False, False, True]


def test_story_runs_end_to_end_and_its_sentences_match_independent_numbers(bundled_settings):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(links.page_file("Guided_story"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == []
    keys = {e.proto.id for e in at.get("plotly_chart")}
    for key in ("story_loss", "story_previous_token", "story_induction", "story_patch_resid", "story_patch_heads",
                "story_circuit", "story_graph", "story_qk"):
        assert any(key in k for k in keys), key
    text = " ".join(m.value.replace("\\", "") for m in at.markdown)

    from lens_core import HookedTransformer
    from transformers import AutoModelForCausalLM

    prompt = next(p for p in __import__("json").loads((BUNDLED / "presets.json").read_text())
                  if p["name"].startswith("Induction"))["prompt"]
    model = HookedTransformer.from_pretrained("default")
    tokens = model.to_tokens(prompt)
    hf = AutoModelForCausalLM.from_pretrained(BUNDLED).eval()
    with torch.no_grad():
        logits = hf(tokens).logits[0]
    loss = torch.nn.functional.cross_entropy(logits[:-1], tokens[0, 1:], reduction="none")
    ids = tokens[0].tolist()
    repeat = [any(ids[j] == ids[p] and ids[j + 1] == ids[p + 1] for j in range(p)) for p in range(len(ids) - 1)]
    first = float(loss[[not r for r in repeat]].mean())
    again = float(loss[repeat].mean())
    assert f"loss is {first:.2f} nats" in text and f"falls to {again:.2f} nats" in text

    attentions = hf_attentions(BUNDLED, tokens)
    induction = loop_scores(attentions, tokens, "induction", True, False)
    named = [f"L{l}H{h}" for l in range(induction.shape[0]) for h in range(induction.shape[1]) if induction[l, h] > 0.5]
    sentence = text.split("Induction heads, which")[1].split("Open in")[0].split("Restoring")[0]
    assert sorted(re.findall(r"L\d+H\d+", sentence)) == sorted(named) and named
    prev = loop_scores(attentions, tokens, "previous_token", True, False)
    best = int(prev.flatten().argmax())
    assert f"L{best // prev.shape[1]}H{best % prev.shape[1]} ({float(prev.flatten()[best]):.2f})" in text

    # the attention explanation: the induction head's real attention from the last token (transformers)
    il, ih = divmod(int(torch.nan_to_num(induction, nan=-1.0).flatten().argmax()), induction.shape[1])
    row = attentions[il][0, ih, -1]
    key = int(row.argmax())
    assert f"L{il}H{ih} puts {float(row[key]):.0%} of its attention on position {key} " in text

    # every step links to its page with the story's prompt
    found = {e.proto.label: (e.proto.page, parse_qs(e.proto.query_string)) for e in at.get("page_link")}
    pages = {page for page, _ in found.values()}
    assert {"head_detectors", "activation_patching", "circuit_discovery", "attribution_graph", "path_patching",
            "features", "attention"} <= pages
    assert all(q["prompt"] == [prompt] for _, q in found.values())


def test_a_feature_link_opens_that_feature_on_the_features_page(bundled_settings):
    params = links.link_params(None, prompt=" own thread sequences own thread", unit_kind="feature", unit_layer=1,
                               unit_index=7)
    at = open_link(params, "Features", timeout=300)
    assert not at.exception and errors(at) == []
    assert at.radio(key="unit_kind").value == "feature"
    assert at.selectbox(key="unit_layer").value == "1" and at.number_input(key="unit_index").value == 7
