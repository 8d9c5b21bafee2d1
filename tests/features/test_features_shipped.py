"""The transcoders and dashboards shipped with the bundled model: plain data within budget, loadable, consistent."""

from __future__ import annotations

import json

import pytest
import torch
from features_support import default_model

from lens_core.corpus import load_default_corpus
from lens_core.features import load_transcoders, run_spliced
from lens_core.features.dashboards import Dashboards
from lens_core.features.transcoder import DEFAULT_TRANSCODERS_DIR as DIR

MB = 1024 * 1024


def test_files_are_plain_data_within_budget():
    files = {f.name: f.stat().st_size for f in DIR.iterdir() if f.is_file()}
    assert {"config.json", "transcoders.safetensors", "README.md", "metrics.json", "dashboards.safetensors",
            "dashboards.json"} <= set(files)
    assert not [n for n in files if n.endswith((".py", ".pyc", ".pt", ".bin", ".pkl", ".pickle"))]
    assert files["transcoders.safetensors"] + files["config.json"] <= 12 * MB
    assert files["dashboards.safetensors"] + files["dashboards.json"] <= 15 * MB


@pytest.fixture(scope="module")
def shipped():
    model = default_model()
    return model, load_transcoders(model), Dashboards(DIR)


def test_loads_for_the_bundled_model_and_splices_exactly(shipped):
    model, tset, _ = shipped
    assert tset.layers == list(range(model.cfg.n_layers))
    for tc in tset:
        assert tc.cfg.activation == "topk" and tc.cfg.k <= 32 and 8 * 128 <= tc.cfg.d_sae <= 16 * 128
        norms = tc.W_dec.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)
    tokens = model.to_tokens("import os\nfor name in os.listdir(path):\n    print(name)")
    assert (run_spliced(model, tset, tokens, error_term=True) - model(tokens)).abs().max() <= 1e-5


def test_dashboards_belong_to_these_weights_and_this_corpus(shipped):
    model, tset, dash = shipped
    corpus = load_default_corpus(model.cfg.n_ctx)
    assert dash.meta["transcoders_fingerprint"] == tset.fingerprint()
    assert dash.meta["corpus_digest"] == corpus.digest
    for layer, feature in ((0, 0), (2, 500)):
        unit = dash.unit("feature", layer, feature)
        if not unit["top"]:
            continue
        best = unit["top"][0]
        row = corpus.tokens[best["window"]:best["window"] + 1]
        _, cache = model.run_with_cache(row)
        acts = tset[layer].encode(cache[f"blocks.{layer}.ln2.hook_normalized"])[0, :, feature]
        assert acts[best["pos"]].item() == pytest.approx(best["value"], rel=1e-4, abs=1e-5)
        assert acts[1:int(corpus.lengths[best["window"]])].max().item() <= best["value"] + 1e-5


def test_card_reports_the_metrics_file():
    metrics = json.loads((DIR / "metrics.json").read_text())
    card = (DIR / "README.md").read_text()
    assert f"{metrics['spliced_loss']:.3f}" in card
    for layer, m in metrics["layers"].items():
        assert f"| {layer} | {m['fvu']:.4f} |" in card
