"""One-file dictionaries (a Gemma Scope params.npz, a SAELens SAE) listed in the settings' [features] table: the
Features page reads their one layer (activations as computed by hand from the written tensors), shows their kind
("SAE", not "Sae"), and the Attribution graph page says plainly that a graph needs a transcoder for every layer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from app_settings import write_settings
from app_testkit import errors, open_page, plotly_array, plotly_figure
from dictionary_writers import jumprelu, jumprelu_params, write_gemma_scope_npz

FEATURES = "app_pages/13_Features.py"
GRAPH = "app_pages/12_Attribution_graph.py"
PROMPT = "def add(a, b):\n    return a + b"


def _write(kind: str, tmp_path):
    """(source, tensors, the hook the dictionary reads)."""
    if kind == "gemma_scope":
        source = tmp_path / "gs" / "layer_1" / "width_16k" / "average_l0_10" / "params.npz"
        return source, write_gemma_scope_npz(source, d_model=128, d_sae=40, seed=2), "blocks.1.ln2.hook_normalized"
    source = tmp_path / "sae"
    source.mkdir()
    tensors = jumprelu_params(torch.Generator().manual_seed(5), 128, 48)
    save_file(tensors, str(source / "sae_weights.safetensors"))
    (source / "cfg.json").write_text(json.dumps({
        "architecture": "jumprelu", "d_in": 128, "d_sae": 48, "hook_name": "blocks.1.hook_resid_post", "hook_layer": 1,
        "normalize_activations": "none", "apply_b_dec_to_input": False}))
    return source, tensors, "blocks.1.hook_resid_post"


def _settings(source, tmp_path, monkeypatch):
    path = write_settings(tmp_path / "settings.toml", tmp_path / "cache",
                          features=f'default = [{{ source = {str(source)!r}, label = "one file" }}]')
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))


@pytest.mark.parametrize("kind", ["gemma_scope", "saelens"])
def test_features_page_reads_a_one_file_dictionary(kind, tmp_path, monkeypatch):
    from lens_core import HookedTransformer

    source, t, hook = _write(kind, tmp_path)
    _settings(source, tmp_path, monkeypatch)
    at = open_page(FEATURES, prompt=PROMPT, rows="3")
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [], errors(at)
    shown = " ".join(c.value for c in at.caption)
    assert ("SAE · source" if kind == "saelens" else "Transcoder · source") in shown, shown
    assert "features in layer(s) [1] only, of the model's 3 (0..2)" in shown.replace("\\", ""), shown

    model = HookedTransformer.from_pretrained("default")
    _, cache = model.run_with_cache(model.to_tokens(PROMPT), names_filter=[hook])
    x = cache[hook][0].double()
    acts = jumprelu(x @ t["W_enc"].double() + t["b_enc"].double(), t["threshold"].double())  # [pos, d_sae]
    fig = plotly_figure(at, "feature_chart")
    labels = fig["layout"]["yaxis"]["ticktext"]
    assert labels and all(label.startswith("L1#") for label in labels), labels
    first = int(labels[0].split("#")[1].split()[0])
    assert plotly_array(fig["data"][0]["z"])[0] == pytest.approx(acts[:, first].tolist(), abs=1e-4)


def test_graph_page_says_a_one_layer_transcoder_is_not_enough(tmp_path, monkeypatch):
    source, _, _ = _write("gemma_scope", tmp_path)
    _settings(source, tmp_path, monkeypatch)
    at = open_page(GRAPH, prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    shown = errors(at) + [w.value for w in at.warning]
    assert not any("Something went wrong" in m or "TypeError" in m for m in shown), shown
    from ui.errors import md_escape

    assert any(md_escape(str(source)) in m and "needs a transcoder for each of the model's" in m
               and "none for layer(s) [0, 2]" in m.replace("\\", "") for m in shown), shown
    assert len(at.get("plotly_chart")) == 0


def test_an_sae_outside_the_layers_is_refused_naming_its_directory(tmp_path, monkeypatch):
    source = tmp_path / "embed_sae"
    source.mkdir()
    save_file(jumprelu_params(torch.Generator().manual_seed(1), 128, 16), str(source / "sae_weights.safetensors"))
    (source / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": 128, "d_sae": 16,
                                                 "hook_name": "hook_embed", "normalize_activations": "none"}))
    _settings(source, tmp_path, monkeypatch)
    at = open_page(FEATURES, prompt=PROMPT)
    assert not at.exception, [e.value for e in at.exception]
    from ui.errors import md_escape

    warnings = [w.value for w in at.warning]
    assert any(md_escape(str(source)) in w and "is not in a layer" in w for w in warnings), warnings


def test_a_layer_replaced_for_a_one_layer_dictionary_comes_back_with_a_whole_set(tmp_path, monkeypatch):
    """unit_layer=2 does not fit a layer-1 file: a notice, layer 1 shown; back on a whole set, layer 2 again and no
    notice (the notice said 2 is not among the choices, which is no longer true)."""
    from dictionary_writers import write_ct_set

    one, _, _ = _write("gemma_scope", tmp_path)
    whole = tmp_path / "set"
    write_ct_set(whole, n_layers=3, d_model=128, d_sae=24)
    path = write_settings(tmp_path / "settings.toml", tmp_path / "cache",
                          features=f'default = [{{ source = {str(whole)!r}, label = "whole" }}, '
                                   f'{{ source = {str(one)!r}, label = "one" }}]')
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    at = open_page(FEATURES, prompt=PROMPT, unit_layer="2")
    assert at.selectbox(key="unit_layer").value == "2"
    at.selectbox(key="dictionary").set_value("one").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="unit_layer").value == "1"
    assert any("unit_layer=2 no longer fits" in w.value.replace("\\", "") for w in at.warning), [w.value for w in at.warning]
    at.selectbox(key="dictionary").set_value("whole").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="unit_layer").value == "2"
    assert at.multiselect(key="layers").value == ["0", "1", "2"]  # the layers asked for, back
    assert not any("unit\\_layer" in w.value or "layers=" in w.value for w in at.warning), [w.value for w in at.warning]
