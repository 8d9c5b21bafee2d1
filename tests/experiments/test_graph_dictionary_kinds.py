"""Attribution graphs take skip and cross-layer transcoders on the bundled model (they used to be refused):
the graph is complete, and the skip term is a path of its own, not folded into the error nodes."""

from __future__ import annotations

import torch
from features_support import default_model, random_transcoder

from lens_core.experiments import AttributionGraphRequest, attribution_graph
from lens_core.features.clt import CrossLayerTranscoder
from lens_core.features.skip import SkipTranscoder

PROMPT = " own thread sequences own thread"


def test_a_skip_transcoder_graph_on_the_bundled_model():
    model = default_model()
    d = model.cfg.d_model
    tcs = {l: random_transcoder(l, d_in=d, d_out=d) for l in range(model.cfg.n_layers)}
    skip = SkipTranscoder(tcs[1].cfg)
    skip.load_state_dict(tcs[1].state_dict(), strict=False)
    with torch.no_grad():
        skip.W_skip.copy_(0.1 * torch.randn(d, d, generator=torch.Generator().manual_seed(0)) / d**0.5)
    tcs[1] = skip
    result = attribution_graph(model, AttributionGraphRequest(prompt=PROMPT, check_top=3), transcoders=tcs)
    assert result.completeness_error < 1e-3 and result.full_features > 0


def test_a_cross_layer_transcoder_graph_on_the_bundled_model():
    model = default_model()
    n, d, f = model.cfg.n_layers, model.cfg.d_model, 8
    clt = CrossLayerTranscoder([torch.zeros(d, f)] * n, [torch.ones(f)] * n,
                               [0.01 * torch.ones(f, n - s, d) for s in range(n)], torch.zeros(n, d))
    result = attribution_graph(model, AttributionGraphRequest(prompt=PROMPT, check_top=3), transcoders=clt)
    assert result.full_features == n * f * len(result.str_tokens)  # every feature on (pre-activation 1) everywhere
    assert result.completeness_error < 1e-3


def test_a_lone_transcoder_is_refused_plainly():
    """One transcoder (one Gemma Scope file) for a 3-layer model: a FeaturesUnavailable naming the missing layers,
    for a plain transcoder (the fast walk) and a skip transcoder (the general walk), not a TypeError."""
    import pytest

    from lens_core.features import FeaturesUnavailable

    model = default_model()
    d = model.cfg.d_model
    lone = random_transcoder(1, d_in=d, d_out=d)
    skip = SkipTranscoder(lone.cfg)
    skip.load_state_dict(lone.state_dict(), strict=False)
    for dictionary in (lone, skip):
        with pytest.raises(FeaturesUnavailable, match=r"none for layer\(s\) \[0, 2\] \(it has layer\(s\) \[1\]\)"):
            attribution_graph(model, AttributionGraphRequest(prompt=PROMPT), transcoders=dictionary)
