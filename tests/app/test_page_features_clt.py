"""The Features page with a cross-layer transcoder (circuit-tracer's files, random, JumpReLU, listed in the settings'
[features] table for the bundled model): the activations heatmap and table, the unit view (no dashboard for this
dictionary, said in words) and steering, each against a hand computation from the written weights; the steering's
"Copy as Python" script loads the same CLT."""

from __future__ import annotations

import pytest
import torch

from app_settings import write_settings
from app_testkit import errors, open_page, plotly_array, plotly_figure
from dictionary_writers import jumprelu, write_ct_clt
from ui.feature_labels import parse_feature_id

PAGE = "app_pages/13_Features.py"
PROMPT = "def add(a, b):\n    return a + b"


@pytest.fixture
def clt_listed(tmp_path, monkeypatch):
    source = tmp_path / "clt"
    weights = write_ct_clt(source, n_layers=3, d_model=128, d_sae=48)
    path = write_settings(tmp_path / "settings.toml", tmp_path / "cache",
                          features=f'default = [{{ source = {str(source)!r}, label = "random CLT" }}]')
    monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))
    from lens_core import HookedTransformer

    model = HookedTransformer.from_pretrained("default")
    return model, weights, source


def _hand_acts(model, w, tokens, layer, x=None):
    """JumpReLU(x @ W_enc[layer]^T + b_enc[layer]) from the file's tensors ([pos, d_sae])."""
    if x is None:
        _, cache = model.run_with_cache(tokens)
        x = cache[f"blocks.{layer}.ln2.hook_normalized"][0]
    return jumprelu(x @ w["W_enc"][layer].T + w["b_enc"][layer], w["threshold"][layer])


def _hand_steered(model, w, tokens, edits):
    """Each edit (layer, feature, value) read live at its layer, (value - a) * W_dec[L][f, t - L] added at every
    later hook_mlp_out, every position."""
    seen = {}

    def read(x, hook):
        seen[hook.layer()] = _hand_acts(model, w, tokens, hook.layer(), x=x[0])

    def add(y, hook):
        t = hook.layer()
        y = y.clone()
        for s, f, v in edits:
            if s <= t:
                y[0] += (v - seen[s][:, f:f + 1]) * w["W_dec"][s][f, t - s]
        return y

    low = min(s for s, _, _ in edits)
    hooks = [(f"blocks.{s}.ln2.hook_normalized", read) for s in sorted({s for s, _, _ in edits})]
    hooks += [(f"blocks.{t}.hook_mlp_out", add) for t in range(low, model.cfg.n_layers)]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)[0].float()


def test_features_page_reads_and_steers_a_cross_layer_transcoder(clt_listed):
    model, w, source = clt_listed
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        acts1, acts0 = _hand_acts(model, w, tokens, 1), _hand_acts(model, w, tokens, 0)
    strongest = int(acts1.max(0).values.argmax())
    other = int(acts0.max(0).values.argmax())
    edits = [(1, strongest, 0.0), (0, other, 3.0)]
    at = open_page(PAGE, prompt=PROMPT, layers="1", rows="4", unit_layer="1", unit_index=str(strongest),
                   edits=", ".join(f"L{l}#{f}={v:g}" for l, f, v in edits))
    assert not at.exception, [e.value for e in at.exception]
    assert errors(at) == [], errors(at)
    from ui.errors import md_escape

    assert any(md_escape(f"Cross-layer transcoder · source: {source}") in c.value for c in at.caption)
    assert not any("cross-layer transcoder" in wn.value.lower() for wn in at.warning), [wn.value for wn in at.warning]

    # activations: heatmap rows are layer 1's features by peak, their values the encoder's by hand
    fig = plotly_figure(at, "feature_chart")
    labels = fig["layout"]["yaxis"]["ticktext"]
    peaks = acts1.max(0).values
    assert [parse_feature_id(t) for t in labels] == [(1, f) for f in peaks.argsort(descending=True)[:4].tolist()]
    z = plotly_array(fig["data"][0]["z"])
    for row, label in enumerate(labels):
        assert z[row] == pytest.approx(acts1[:, parse_feature_id(label)[1]].tolist(), abs=1e-5)
    table = next(d.value for d in at.dataframe if "features" in d.value.columns)
    first = [piece.split(" ")[0] for piece in table["features"][0].split(", ")]
    top0 = [f for f in acts1[0].argsort(descending=True)[:len(first)].tolist() if acts1[0, f] > 0]
    assert first == [f"L1#{f}" for f in top0]

    # unit view: its activation over the prompt, and no dashboard for this dictionary, in words
    markdown = " ".join(m.value for m in at.markdown)
    assert f"L1\\#{strongest}" in markdown and f"(peak {float(acts1[:, strongest].max()):.3f})" in markdown
    assert any("No dashboard for this dictionary" in i.value for i in at.info), [i.value for i in at.info]
    from ui.feature_labels import NO_DASHBOARDS, NO_DASHBOARDS_FOR_DICTIONARY

    assert [c.value for c in at.caption].count(NO_DASHBOARDS_FOR_DICTIONARY) == 1
    assert NO_DASHBOARDS not in [c.value for c in at.caption]  # no advice to build the bundled set's dashboards

    # steering: the feature's writes into every later layer changed, as the hand-written hooks do
    reference = _hand_steered(model, w, tokens, edits)
    with torch.no_grad():
        lp_o = model(tokens)[0].float().log_softmax(-1)
    lp_s = reference.log_softmax(-1)
    kl = (lp_o.exp() * (lp_o - lp_s)).sum(-1)
    shown_kl = plotly_array(plotly_figure(at, "kl_chart")["data"][0]["y"])
    assert shown_kl.tolist() == pytest.approx(kl.tolist(), abs=1e-4)
    assert float(kl.max()) > 1e-3
    side = next(d.value for d in at.dataframe if "p (steered)" in d.value.columns)
    assert side["p (steered)"].tolist() == pytest.approx(lp_s[-1].exp().topk(len(side)).values.tolist(), abs=2e-4)
    assert any("writes into the MLP output of every layer" in c.value for c in at.caption)

    # "Copy as Python" loads this CLT (not the bundled transcoders) and gives the same steering
    script = next(c.value for c in at.code if "feature_steering" in c.value)
    assert f"load_dictionary({str(source)!r}, model)" in script and "transcoders=transcoders" in script
    namespace: dict = {}
    exec(compile(script, "snippet", "exec"), namespace)  # noqa: S102  (the page's own snippet)
    torch.testing.assert_close(namespace["result"].kl, kl, atol=1e-4, rtol=1e-4)


def test_a_bad_cross_layer_edit_is_a_message(clt_listed):
    at = open_page(PAGE, prompt=PROMPT, edits="L1#48=2, L3#0=1")
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(e.value for e in at.error)
    assert "features 0 to 47" in shown and "no features on layer 3" in shown, shown
    assert "FeaturesUnavailable" not in shown and "Something went wrong" not in shown, shown
